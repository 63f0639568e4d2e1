"""What the LLM is told, fitted to its context window, and how a pixel answer is read back.

Local servers often cut prompts silently when they exceed the context, so every
prompt is measured against the model's window and, when too large, the least
important parts are shortened, saying in the prompt what was left out.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from auto_gvpie.edits import edit_format_instructions
from auto_gvpie.pixels.program import json_schema
from auto_gvpie.tasks import Task

log = logging.getLogger(__name__)

WHOLE_FILE_MAX_LINES = 400  # beyond this, rewriting whole files costs small models too many tokens


@dataclass
class Attempt:
    """What happened on one attempt, as the next prompt should show it."""
    number: int
    answer: str
    outcome: str  # "refused" | "tests_failed" | "bad_answer" | "invalid_program"
    feedback: str


@dataclass
class Prompt:
    messages: list[dict]
    edit_format: str | None
    left_out: list[str] = field(default_factory=list)
    tokens: int = 0
    max_tokens: int | None = None  # answer budget; None: the configured maximum


def choose_edit_format(setting: str, files: dict[str, str]) -> str:
    """Whole files suit small local models best (measured: bench/agent_bench.py); large files need edits."""
    if setting != "auto":
        return setting
    if all(text.count("\n") <= WHOLE_FILE_MAX_LINES for text in files.values()):
        return "whole"
    return "search_replace"


def _fence(path: str, text: str) -> str:
    lang = {".py": "python", ".rs": "rust", ".js": "javascript", ".ts": "typescript", ".json": "json",
            ".toml": "toml", ".md": "markdown", ".sh": "bash"}.get(Path(path).suffix, "")
    return f"{path}\n```{lang}\n{text}{'' if text.endswith(chr(10)) or not text else chr(10)}```\n"


def _shorten(text: str, max_chars: int, what: str, left_out: list[str]) -> str:
    """Keep the head and the tail of a long text and say in it what is missing."""
    if len(text) <= max_chars:
        return text
    head = text[: max_chars * 2 // 3]
    tail = text[-(max_chars // 3):]
    dropped_lines = text.count("\n") - head.count("\n") - tail.count("\n")
    left_out.append(f"{dropped_lines} lines from the middle of {what}")
    return f"{head}\n[... {dropped_lines} lines of {what} left out to fit the context window ...]\n{tail}"


def test_files(worktree: Path, commands: tuple[str, ...], inputs: tuple[str, ...]) -> dict[str, str]:
    """Files named in the test commands: the model should see what it must satisfy."""
    found = {}
    for command in commands:
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        for word in words:
            word = word.split("::")[0]
            path = worktree / word
            if word not in inputs and word not in found and path.is_file() and path.stat().st_size < 200_000:
                found[word] = path.read_text(encoding="utf-8", errors="replace")
    return found


def code_prompt(task: Task, worktree: Path, memory: str, history: list[Attempt], setting_format: str,
                context_window: int, answer_tokens: int, count: Callable[[str], int], failing: str = "") -> Prompt:
    """`failing`: what the failing tests print on the tree as it is now (first: the untouched tree)."""
    files = {}
    for rel in task.inputs:
        path = worktree / rel
        files[rel] = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    fmt = choose_edit_format(setting_format, files)
    tests = test_files(worktree, task.tests, task.inputs)
    budget = context_window - answer_tokens - 64
    file_tokens = sum(count(t) for t in files.values())
    if fmt == "whole" and file_tokens * 2 > budget:
        fmt = "search_replace"  # the answer must repeat whole files; they would not fit
    example_path, example_text = next(iter(files.items()), ("hello.py", "print('hello')\n"))
    system = (
        "You are a careful software engineer. You change files in a git repository by answering with edits "
        "in exactly the format described below; paths are relative to the repository root. Answer with the "
        "edits only, no explanations.\n\n" + edit_format_instructions(fmt, example_path, example_text))

    # Shrink the least important parts first until the prompt fits.
    shares = {"memory": 1.0, "previous": 1.0, "tests": 1.0, "files": 1.0}
    for _ in range(20):
        left_out: list[str] = []
        user = _code_user(task, files, tests, memory, history, failing, shares, left_out)
        tokens = count(system) + count(user)
        if tokens <= budget:
            break
        for part in ("memory", "previous", "tests", "files"):
            if shares[part] > 0.1:
                shares[part] /= 2
                break
    # An answer needs about as many tokens as the files it rewrites; a tighter budget stops a small
    # model that rambles (seen: 2,000 tokens of repetition) minutes earlier.
    needed = 2 * file_tokens + 512
    return Prompt([{"role": "system", "content": system}, {"role": "user", "content": user}], fmt, left_out, tokens,
                  min(answer_tokens, needed))


def _code_user(task: Task, files: dict[str, str], tests: dict[str, str], memory: str, history: list[Attempt],
               failing: str, shares: dict[str, float], left_out: list[str]) -> str:
    parts = [f"# Task: {task.title}\n"]
    if task.description:
        parts.append(task.description.strip() + "\n")
    if files:
        parts.append("## Files to change (current contents)\n")
        for rel, text in files.items():
            body = _shorten(text, int(24_000 * shares["files"]), rel, left_out) if text else ""
            parts.append(_fence(rel, body) if text else f"{rel}\n(this file does not exist yet; create it)\n")
    if task.tests:
        parts.append("## Tests that must pass\n" + "\n".join(f"- `{c}`" for c in task.tests) + "\n")
        for rel, text in tests.items():
            parts.append(f"Test file (read-only, do not edit) {_fence(rel, _shorten(text, int(8_000 * shares['tests']), rel, left_out))}")
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


PIXEL_GUIDE = """\
You write pixel programs: JSON documents in this small drawing language (version 1).
{"kind": "pixel_program", "version": 1, "name": "short_name",
 "canvas": {"width": W, "height": H},
 "palette": {"bg": [0, 0, 0], "fg": "#00ff00"},
 "ops": [...], "metadata": {"description": "what it shows"}}
Colours: a palette name, [r,g,b], [r,g,b,a] (0-255) or "#rrggbb" / "#rrggbbaa". The canvas starts black.
Ops, painted in order (integer coordinates; anything off-canvas is clipped):
{"op": "FILL", "color": C}
{"op": "SET", "x": X, "y": Y, "color": C}
{"op": "RECT", "x": X, "y": Y, "width": W, "height": H, "color": C, "fill": true}   (fill false = 1-px outline)
{"op": "LINE", "x1": X1, "y1": Y1, "x2": X2, "y2": Y2, "color": C}
{"op": "CIRCLE", "cx": X, "cy": Y, "r": R, "color": C, "fill": true}
{"op": "WRITE_TEXT", "x": X, "y": Y, "text": "HI", "color": C, "scale": 1}   (8x8 pixels per character at scale 1)
Start with a FILL of the background colour, then draw on top. Define every palette name you use.
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


def pixel_prompt(task: Task, memory: str, history: list[Attempt]) -> Prompt:
    parts = [f"# Task: {task.title}\n"]
    if task.description:
        parts.append(task.description.strip() + "\n")
    if memory:
        parts.append(memory + "\n")
    if history:
        last = history[-1]
        parts.append(f"## Your previous answer (attempt {last.number}) was rejected\n{last.feedback}\n"
                     "Fix exactly that problem and answer with the whole corrected JSON document.\n")
    parts.append("Answer with the pixel program JSON only.")
    return Prompt([{"role": "system", "content": PIXEL_GUIDE}, {"role": "user", "content": "\n".join(parts)}], None)


class NoJSON(ValueError):
    """The answer holds no JSON object."""


def json_from_answer(text: str) -> object:
    """The first JSON object in an answer, whether bare, fenced or wrapped in prose."""
    candidates = [m.group(1) for m in re.finditer(r"```(?:json)?\s*\n(.*?)```", text, re.S)] + [text]
    decoder = json.JSONDecoder()
    first_error = None
    for candidate in candidates:
        for match in re.finditer(r"\{", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except json.JSONDecodeError as exc:
                first_error = first_error or exc
                continue
            if isinstance(value, dict):
                return value
    if first_error is not None:
        raise NoJSON(f"the answer is not valid JSON: {first_error.msg} at line {first_error.lineno} "
                     f"column {first_error.colno}")
    raise NoJSON("the answer contains no JSON object; answer with the pixel program JSON only")
