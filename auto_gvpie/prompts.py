"""What the LLM is told, fitted to its context window, and how a pixel answer is read back.

Local servers often cut prompts silently when they exceed the context, so every
prompt is measured against the model's window and, when too large, the least
important parts are shortened, saying in the prompt what was left out.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from auto_gvpie import excerpt
from auto_gvpie.codeindex import Symbol, language_of, parse_symbols
from auto_gvpie.edits import edit_format_instructions, fence_for
from auto_gvpie.inbox import Task
from auto_gvpie.paths import PathRefused, clean, confine
from auto_gvpie.pixels.program import json_schema
from auto_gvpie.pixels.report import named_colours

log = logging.getLogger(__name__)

WHOLE_FILE_MAX_LINES = 400  # beyond this, rewriting whole files costs small models too many tokens
FILE_CHARS = 24_000  # a file larger than this is shown as an excerpt: its skeleton, never a blind cut
# A file where localisation found the symbols that matter is shown focused beyond this size: those
# symbols whole, the rest as one-line signatures. Prompt processing is the slow part on a laptop CPU
# (a 6k-token prompt: minutes), so the model reads what matters, not the whole module.
FOCUSED_FILE_CHARS = 3_000
# A test file is shown focused on its failing tests (the output already has their assertions).
TEST_FILE_CHARS = 3_000
MAX_INPUT_BYTES = 2_000_000  # an input larger than this could never be edited through a prompt


@dataclass
class Attempt:
    """What happened on one attempt, as the next prompt should show it."""
    number: int
    answer: str
    outcome: str  # "refused" | "tests_failed" | "bad_answer" | "invalid_program" | "picture_rejected" | "judge_rejected"
    feedback: str


@dataclass
class Prompt:
    messages: list[dict]
    edit_format: str | None
    left_out: list[str] = field(default_factory=list)
    tokens: int = 0
    max_tokens: int | None = None  # answer budget; None: the configured maximum
    # Inputs that were not shown and why (outside the repository, binary, ...), for `--status`.
    warnings: list[str] = field(default_factory=list)
    excerpts: list[str] = field(default_factory=list)  # files shown in part (focused symbols and skeleton)


def choose_edit_format(setting: str, files: dict[str, str]) -> str:
    """Whole files suit small local models best (measured: bench/agent_bench.py); large files need edits."""
    if setting != "auto":
        return setting
    if all(text.count("\n") <= WHOLE_FILE_MAX_LINES for text in files.values()):
        return "whole"
    return "search_replace"


def _fence(path: str, text: str) -> str:
    """The file in a fenced block, with a fence longer than any ``` line in it (see `edits.fence_for`)."""
    lang = {".py": "python", ".rs": "rust", ".js": "javascript", ".ts": "typescript", ".json": "json",
            ".toml": "toml", ".md": "markdown", ".sh": "bash"}.get(Path(path).suffix, "")
    fence = fence_for(text)
    return f"{path}\n{fence}{lang}\n{text}{'' if text.endswith(chr(10)) or not text else chr(10)}{fence}\n"


def _shorten(text: str, max_chars: int, what: str, left_out: list[str]) -> str:
    """Keep the head and the tail of a long text and say in it what is missing."""
    if len(text) <= max_chars:
        return text
    head = text[: max_chars * 2 // 3]
    tail = text[len(text) - max_chars // 3:]
    dropped = text[len(head): len(text) - len(tail)]
    lines = dropped.count("\n")
    # A long single line (a pasted log, a huge title) has no lines to count.
    amount = f"{lines:,} lines" if lines else f"{len(dropped):,} characters"
    left_out.append(f"{amount} from the middle of {what}")
    return f"{head}\n[... {amount} of {what} left out to fit the context window ...]\n{tail}"


# Below these sizes a part is not shortened further: what is left would no longer tell the model anything.
_MIN_SHARE = 0.1
_MIN_TASK_CHARS = 500
# No tokenizer packs many more characters into a token, so task text beyond this many per token of the
# budget can never fit; cutting it first keeps the fitting loop from counting a megabyte over and over.
_CHARS_PER_TOKEN_MAX = 16


def _fit(system: str, build: Callable[[dict[str, float], list[str]], str], order: Sequence[str],
         floors: dict[str, float], budget: int, count: Callable[[str], int]) -> tuple[str, list[str], int]:
    """The user message built with every part at full share, or with the parts in `order` (least
    important first) halved one after another until the prompt fits; and its token count."""
    shares = dict.fromkeys(order, 1.0)
    system_tokens = count(system)
    while True:
        left_out: list[str] = []
        user = build(shares, left_out)
        tokens = system_tokens + count(user)
        part = next((p for p in order if shares[p] > floors.get(p, _MIN_SHARE)), None)
        if tokens <= budget or part is None:
            break
        shares[part] /= 2
    # Last resort, for what has no share of its own (hundreds of inputs, a huge test command): a server
    # would cut the prompt silently, so cut its middle here and say so.
    for _ in range(8):
        room = budget - system_tokens
        if tokens <= budget or room <= 0:
            break
        user = _shorten(user, int(len(user) * room / (tokens - system_tokens) * 0.9), "this message", left_out)
        tokens = system_tokens + count(user)
    return user, left_out, tokens


def _task_floor(task: Task, budget: int) -> float:
    """The smallest share of the task text worth sending (see `_task_text`)."""
    size = min(max(len(task.title), len(task.description.strip())), budget * _CHARS_PER_TOKEN_MAX)
    return min(1.0, _MIN_TASK_CHARS / max(size, 1))


def _task_text(task: Task, share: float, budget: int, left_out: list[str]) -> list[str]:
    """The title and description, each cut to `share` of its size (capped by what could ever fit)."""
    cap = budget * _CHARS_PER_TOKEN_MAX

    def limit(text: str) -> int:
        return max(_MIN_TASK_CHARS, int(min(len(text), cap) * share))

    parts = [f"# Task: {_shorten(task.title, limit(task.title), 'the task title', left_out)}\n"]
    description = task.description.strip()
    if description:
        parts.append(_shorten(description, limit(description), "the task description", left_out) + "\n")
    return parts


def read_inputs(worktree: Path, inputs: Sequence[str],
                protected: Sequence[str] = ()) -> tuple[dict[str, str], list[str]]:
    """The task's input files that may be shown, by cleaned path ("" for one that does not exist
    yet), and one warning for each input that is not shown and why."""
    files: dict[str, str] = {}
    warnings: list[str] = []
    for number, raw in enumerate(inputs):
        where = f"inputs[{number}] {raw!r}"
        try:
            rel, real = confine(worktree, raw, protected)
            if not real.exists():
                files[rel] = ""
                continue
            if not real.is_file():
                warnings.append(f"{where}: not a regular file, not shown")
                continue
            size = real.stat().st_size
            if size > MAX_INPUT_BYTES:
                warnings.append(f"{where}: {size:,} bytes, too large to show")
                continue
            text = _text_or_none(real.read_bytes())
        except PathRefused as refused:
            warnings.append(f"{where}: refused, {refused}")
            continue
        except OSError as error:
            warnings.append(f"{where}: cannot be read ({error.strerror or error})")
            continue
        if text is None:
            warnings.append(f"{where}: a binary file, not shown")
        else:
            files[rel] = text
    return files, warnings


def _text_or_none(data: bytes) -> str | None:
    """The file as text, or None for binary content (NUL bytes, or not UTF-8), which would be garbled."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def test_files(worktree: Path, commands: Sequence[str], inputs: Sequence[str],
               protected: Sequence[str] = ()) -> dict[str, str]:
    """Files named in the test commands: the model should see what it must satisfy.

    Words that are not a readable text file inside the repository are skipped without a word:
    most words of a command are not files, and a command may name anything (`cat /etc/passwd`).
    """
    shown = {clean(p) for p in inputs}
    found: dict[str, str] = {}
    for command in commands:
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        for word in words:
            try:
                rel, real = confine(worktree, word.split("::")[0], protected)
                if rel in shown or rel in found or not real.is_file() or real.stat().st_size >= 200_000:
                    continue
                text = _text_or_none(real.read_bytes())
            except (PathRefused, OSError):
                continue
            if text is not None:
                found[rel] = text
    return found


def code_prompt(task: Task, worktree: Path, memory: str, history: list[Attempt], setting_format: str,
                context_window: int, answer_tokens: int, count: Callable[[str], int], failing: str = "",
                protected: Sequence[str] = (), shown: Sequence[str] | None = None,
                focus: Mapping[str, Sequence[Symbol]] | None = None) -> Prompt:
    """`failing`: what the failing tests print on the tree as it is now (first: the untouched tree).
    `protected`: the service's own repo-relative paths, never shown (see `paths.confine`).
    `shown`: the files to show (default: the task's inputs; localisation adds the files it found);
    `focus`: per file, the symbols that matter, shown whole when the file is shown in part."""
    focus = focus or {}
    files, warnings = read_inputs(worktree, task.inputs if shown is None else shown, protected)
    limits = {rel: FOCUSED_FILE_CHARS if focus.get(rel) else FILE_CHARS for rel in files}
    excerpts = [rel for rel, text in files.items() if len(text) > limits[rel]]
    fmt = choose_edit_format(setting_format, files)
    if excerpts and setting_format == "auto" and all(language_of(rel) for rel in excerpts):
        # A file shown in part cannot be written out whole, but the function to change can: small
        # models copy a long function into SEARCH and never reach its =======.
        fmt = "symbol"
    elif excerpts and fmt == "whole":
        fmt = "search_replace"
    tests = test_files(worktree, task.tests, task.inputs, protected)
    # Parsed once here, not on each try of `_fit`.
    test_focus = {rel: _failing_in(rel, text, task.tests, failing) for rel, text in tests.items()}
    budget = context_window - answer_tokens - 64
    file_tokens = sum(count(t) for t in files.values())
    if fmt == "whole" and file_tokens * 2 > budget:
        fmt = "search_replace"  # the answer must repeat whole files; they would not fit
    example_path, example_text = next(iter(files.items()), ("hello.py", "print('hello')\n"))
    system = (
        "You are a careful software engineer. You change files in a git repository by answering with edits "
        "in exactly the format described below; paths are relative to the repository root. Answer with the "
        "edits only, no explanations.\n\n" + edit_format_instructions(
            fmt, example_path, example_text, max((fence_for(t) for t in files.values()), key=len, default=None)))

    def build(shares: dict[str, float], left_out: list[str]) -> str:
        return _code_user(task, files, tests, memory, history, failing, shares, budget, left_out, limits, focus, fmt,
                          test_focus)

    user, left_out, tokens = _fit(system, build, ("memory", "previous", "tests", "task", "files"),
                                  {"task": _task_floor(task, budget)}, budget, count)
    # An answer needs about as many tokens as the files it rewrites; a tighter budget stops a small
    # model that rambles (seen: 2,000 tokens of repetition) minutes earlier.
    # With no file to show, the model must write one from nothing: no tighter budget then.
    needed = 2 * file_tokens + 512 if files else answer_tokens
    return Prompt([{"role": "system", "content": system}, {"role": "user", "content": user}], fmt, left_out, tokens,
                  min(answer_tokens, needed), warnings, excerpts)


def _code_user(task: Task, files: dict[str, str], tests: dict[str, str], memory: str, history: list[Attempt],
               failing: str, shares: dict[str, float], budget: int, left_out: list[str],
               limits: Mapping[str, int], focus: Mapping[str, Sequence[Symbol]], fmt: str,
               test_focus: Mapping[str, Sequence[Symbol]]) -> str:
    parts = _task_text(task, shares["task"], budget, left_out)
    if files:
        parts.append("## Files to change (current contents)\n")
        bodies = {rel: excerpt.render(rel, text, focus.get(rel, ()), int(limits[rel] * shares["files"]),
                                      lead=fmt != "symbol").text
                  for rel, text in files.items() if text}
        if any(bodies[rel] != files[rel] for rel in bodies):
            parts.append((excerpt.NOTE_WHOLE_DEFINITIONS if fmt == "symbol" else excerpt.NOTE) + "\n")
        for rel, text in files.items():
            parts.append(_fence(rel, bodies[rel]) if text else f"{rel}\n(this file does not exist yet; create it)\n")
    if task.tests:
        parts.append("## Tests that must pass\n" + "\n".join(f"- `{c}`" for c in task.tests) + "\n")
        for rel, text in tests.items():
            body = excerpt.render(rel, text, test_focus[rel], int(TEST_FILE_CHARS * shares["tests"])).text
            parts.append(f"Test file (read-only, do not edit) {_fence(rel, body)}")
    if failing and not (history and history[-1].outcome == "tests_failed"):  # else the feedback has it
        parts.append("## The tests fail now like this\n" +
                     _shorten(failing, int(4_000 * shares["previous"]), "the test output", left_out) + "\n")
    if memory:
        parts.append(_shorten(memory, int(3_000 * shares["memory"]), "the relevant memory", left_out) + "\n")
    if history:
        last = history[-1]
        parts.append(f"## Your previous attempt ({last.number}) did not work\n")
        parts.append("Your answer was:\n" + _shorten(last.answer, int(4_000 * shares["previous"]), "your previous answer", left_out) + "\n")
        parts.append("What went wrong:\n" + _shorten(last.feedback, int(6_000 * shares["previous"]), "the failure output", left_out) + "\n")
        if len(history) > 1:
            parts.append("Earlier attempts: " + "; ".join(f"#{a.number} {a.outcome}" for a in history[:-1]) + "\n")
        parts.append("The files above already include the changes that applied; start from them.\n")
    if left_out:
        parts.append("Note: to fit the context window, these were left out: " + "; ".join(left_out) + "\n")
    parts.append("Answer now with the edits.")
    return "\n".join(parts)


def _failing_in(rel: str, text: str, commands: Sequence[str], failing: str) -> list[Symbol]:
    """The test functions of a test file that the commands select or the output shows failing: a
    test file is shown focused on them, the rest as signatures (the assertions are in the output)."""
    named = set(re.findall(r"\b(?:test|Test)\w*", failing + "\n" + "\n".join(commands)))
    try:
        symbols = parse_symbols(rel, text.encode("utf-8"))
    except Exception:  # unparseable: shown from the top as far as it fits
        return []
    return [s for s in symbols if s.name in named]


PIXEL_GUIDE = """\
You write pixel programs: JSON documents in this small drawing language (version 1).
{"kind": "pixel_program", "version": 1, "name": "short_name",
 "canvas": {"width": W, "height": H},
 "palette": {"NAME": [R, G, B], ...},
 "ops": [...], "metadata": {"description": "what it shows"}}
Colours: a palette name, [r,g,b], [r,g,b,a] (0-255) or "#rrggbb" / "#rrggbbaa". The canvas starts black.
Ops, painted in order (integer coordinates; anything off-canvas is clipped):
{"op": "FILL", "color": C}
{"op": "SET", "x": X, "y": Y, "color": C}
{"op": "RECT", "x": X, "y": Y, "width": W, "height": H, "color": C, "fill": true}   (fill false = 1-px outline)
{"op": "LINE", "x1": X1, "y1": Y1, "x2": X2, "y2": Y2, "color": C}
{"op": "CIRCLE", "cx": X, "cy": Y, "r": R, "color": C, "fill": true}
{"op": "WRITE_TEXT", "x": X, "y": Y, "text": "HI", "color": C, "scale": 1}   (8x8 pixels per character at scale 1)
Start with a FILL of the background colour, then draw on top; a later op paints over earlier ones.
Keep text inside the canvas: at scale S a line of N characters is 8*S*N pixels wide and 8*S tall, so
x + 8*S*N <= W and y + 8*S <= H. Use the colours the task names; define every palette name you use,
and use every one you define.
Answer with the JSON document only."""

# Local servers turn the schema into a grammar; llama.cpp refuses ones with large repeat bounds
# (seen: 10,000 ops), so generation asks for at most this much. Validation still allows the full limits.
GENERATION_MAX_OPS = 64
GENERATION_MAX_TEXT = 32


def pixel_schema() -> dict:
    """The schema sent for structured output. Name and palette are required: a grammar writes required
    keys first, so the colours are defined before the ops that use them, and pictures get a name."""
    schema = json_schema(max_ops=GENERATION_MAX_OPS, max_text=GENERATION_MAX_TEXT)
    schema["required"] = [k for k in schema["properties"] if k in {*schema["required"], "name", "palette"}]
    return schema


def pixel_prompt(task: Task, memory: str, history: list[Attempt], context_window: int = 8192,
                 answer_tokens: int = 2048, count: Callable[[str], int] | None = None) -> Prompt:
    """The defaults match the default settings and a rough count; the engine passes the model's own."""
    count = count or _rough_count
    budget = context_window - answer_tokens - 64

    # A small model copies the guide's example colours unless it is handed the task's own (seen: the
    # demo's "dark blue background" drawn black three times); these are ones the render report accepts.
    colours = named_colours(f"{task.title}\n{task.description}")
    palette = ("The colours the task names, as RGB (put them in the palette under these names): "
               + ", ".join(f'"{word.replace(" ", "_")}": {rgb}' for word, rgb in colours) + "\n") if colours else ""

    def build(shares: dict[str, float], left_out: list[str]) -> str:
        parts = _task_text(task, shares["task"], budget, left_out)
        if palette:
            parts.append(palette)
        if memory:
            parts.append(_shorten(memory, int(3_000 * shares["memory"]), "the relevant memory", left_out) + "\n")
        if history:
            last = history[-1]
            feedback = _shorten(last.feedback, int(6_000 * shares["previous"]), "the rejection", left_out)
            # A valid program that was sent back is shown, so the fix can be made in it, not from scratch.
            shown = (_shorten(last.answer.strip(), int(4_000 * shares["previous"]), "your previous program", left_out)
                     if last.outcome in ("picture_rejected", "judge_rejected") else "")
            parts.append(f"## Your previous answer (attempt {last.number}) was rejected\n"
                         + (f"It was:\n{shown}\n" if shown else "") + f"{feedback}\n"
                         "Fix exactly that problem and answer with the whole corrected JSON document.\n")
        if left_out:
            parts.append("Note: to fit the context window, these were left out: " + "; ".join(left_out) + "\n")
        parts.append("Answer with the pixel program JSON only.")
        return "\n".join(parts)

    user, left_out, tokens = _fit(PIXEL_GUIDE, build, ("memory", "previous", "task"),
                                  {"task": _task_floor(task, budget)}, budget, count)
    return Prompt([{"role": "system", "content": PIXEL_GUIDE}, {"role": "user", "content": user}], None, left_out,
                  tokens)


def _rough_count(text: str) -> int:
    # Errs on the high side (about 3 bytes a token), like the HTTP client's estimate.
    return len(text.encode("utf-8")) // 3 + 1
