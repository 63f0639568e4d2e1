"""Which files (and which symbols in them) a code task is about, and why.

A task may leave `inputs` empty, or name files that do not hold the fault. This
module combines what the task gives into one ranked list, each file with the
reasons it was chosen, cheaply enough to run before every first prompt (no model
calls; tree-sitter parses, cached by content, and at most one index search).

Signals and their weights, added up per file and per symbol (a name defined in
several files gives each of them its weight divided by their number, so a common
name like `get` says little):

  listed in the task's inputs             100  (inputs always come first, in their order)
  deepest in-repo, non-test frame           8  of each traceback (Python, pytest, Rust, JS)
  another in-repo, non-test frame           3  (at most 3 per file)
  file named in the title / description     6
  code-like name in the title               6  (`ordinal(13)`, `Foo.bar`, `backticked`, snake_case)
  code-like name in the description         4
  called by a failing test function         3
  called on the failing line of a test      2
  holds a failing test (in-file tests)      2  (Rust `mod tests`; the test itself is no candidate)
  imported by a test the commands name      1  (the module), 1 (each name imported from it);
    (or that the output shows failing)
  plain word matching a symbol's name       1
  code index search, rank r (from 0)      1.5 / (r + 1)  (a tie-breaker)

Test files (conventional paths: tests/, test_*.py, *_test.go, *.spec.ts, ...)
and test functions are never candidates unless listed in `inputs`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import subprocess
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from auto_gvpie.codeindex import SKIP_DIRS, CodeIndex, Symbol, language_of, parse_symbols
from auto_gvpie.paths import PathRefused, clean, confine, protected_by
from auto_gvpie.testsel import is_test_path

log = logging.getLogger(__name__)

W_INPUT = 100.0
W_FRAME_DEEPEST = 8.0
W_FRAME = 3.0
MAX_FRAMES_PER_FILE = 3
W_FILE_NAMED = 6.0
W_NAMED_TITLE = 6.0
W_NAMED_DESCRIPTION = 4.0
W_CALLED = 3.0
W_FAILING_LINE = 2.0
W_TEST_HOME = 2.0
W_IMPORTED = 1.0
W_WORD = 1.0
W_SEARCH = 1.5

MAX_FILES = 5000  # files scanned for symbol names; a bigger repository relies on the frames and the index
MAX_FILE_BYTES = 1_000_000
MAX_SYMBOLS_PER_FILE = 5
SEARCH_K = 10
_CACHE_ENTRIES = 20_000

# Paths in test output that are never the repository's own code, even when a suffix matches.
_OUTSIDE = ("site-packages", "dist-packages", "/rustc/", "/.cargo/", "/.rustup/", "node_modules", "<frozen",
            "node:", "/usr/lib/", "/usr/local/lib/", "/lib/python", "/nix/store/")
_SOURCE = r"(?:py|pyi|rs|js|mjs|cjs|jsx|ts|tsx|mts|cts)"
_PY_FRAME = re.compile(r'File "([^"]+)", line (\d+)(?:, in ([\w<>.]+))?')
_PYTEST_LOC = re.compile(rf"^([\w./\\@+-]+\.{_SOURCE}):(\d+):(?: |$)")
_AT_FRAME = re.compile(rf"^\s*at\s+(?:.*?\()?((?:[A-Za-z]:)?[\w./\\@+-]+\.{_SOURCE}):(\d+)(?::\d+)?\)?\s*$")
_PANIC = re.compile(rf"(?:panicked at|-->)\s+'?(?:.*?',\s*)?([\w./\\@+-]+\.{_SOURCE}):(\d+):\d+")
_BLOCK = re.compile(r"^(Traceback \(most recent call last\)|_{3,} .+ _{3,}$|---- .+ ----$|thread '.+' panicked)")
_PYTEST_FAILED = re.compile(r"^(?:FAILED|ERROR) ([\w./\\-]+)::([\w:.\[\]-]+)")
_RUST_TEST = re.compile(r"^---- (\S+) stdout ----")
_PYTEST_TITLE = re.compile(r"^_{3,} ([\w.\[\]-]+) _{3,}$")

_CALL = re.compile(r"\b([A-Za-z_]\w*(?:(?:\.|::)[A-Za-z_]\w*)*)\(")  # no space: "the parser (see)" is prose
_DOTTED = re.compile(r"\b([A-Za-z_]\w*(?:(?:\.|::)[A-Za-z_]\w*)+)\b")
_BACKTICK = re.compile(r"`([^`\n]{1,200})`")
_FILE_WORD = re.compile(rf"(?<![\w/.-])([\w./-]*[\w-]\.(?:{_SOURCE[3:-1]}|go|java|c|h|cpp|hpp|rb|toml|json|md))\b")
_WORD = re.compile(r"\b[A-Za-z_]\w{2,}\b")
_CODE_LIKE = re.compile(r"_|[a-z][A-Z]")

_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(?:\(([^)]*)\)|([\w \t,]+))", re.MULTILINE)
_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w.]+(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*[\w.]+(?:[ \t]+as[ \t]+\w+)?)*)",
                        re.MULTILINE)
_JS_IMPORT = re.compile(r"""(?:import\s+(?:([\w{}\s,*]+)\s+from\s+)?|require\s*\(\s*)['"]([^'"]+)['"]""")
_RUST_USE = re.compile(r"^\s*(?:pub\s+)?use\s+([\w:]+)(?:::\{([\w\s,:]+)\})?\s*;", re.MULTILINE)


_cache: OrderedDict[tuple[str, str], list[Symbol]] = OrderedDict()


@dataclass
class RankedFile:
    path: str
    score: float
    reasons: list[str]
    symbols: list[Symbol]  # best first: the function named in a frame or in the title leads


@dataclass
class Ranking:
    files: list[RankedFile]
    notes: list[str] = field(default_factory=list)  # signals that could not be used, and why

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def to_json(self) -> dict:
        """For the attempt artifact: every file with its score, reasons and symbols."""
        return {"files": [{"path": f.path, "score": round(f.score, 2), "reasons": f.reasons,
                           "symbols": [{"qualname": s.qualname, "kind": s.kind, "lines": [s.start_line, s.end_line]}
                                       for s in f.symbols]} for f in self.files],
                "notes": self.notes}

    def summary(self, files: int = 3, reasons: int = 2) -> str:
        """One line for `--status`: `calc.py (deepest traceback frame calc.py:12 in add; named in the title: add)`."""
        if not self.files:
            return "no file found"
        parts = [f"{f.path} ({'; '.join(f.reasons[:reasons])})" for f in self.files[:files]]
        more = len(self.files) - files
        return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


class _Tally:
    """Scores and reasons per file and per symbol; a reason is kept once, strongest first."""

    def __init__(self) -> None:
        self.files: dict[str, float] = defaultdict(float)
        self.reasons: dict[str, dict[str, float]] = defaultdict(dict)
        self.symbols: dict[Symbol, float] = defaultdict(float)
        self._credited: set[tuple[str, Symbol]] = set()

    def add(self, path: str, weight: float, reason: str, symbol: Symbol | None = None) -> None:
        # The same evidence twice (a name defined twice in one file, a frame printed by two tracebacks)
        # counts once for the file; each symbol it names still gets it.
        if symbol is not None and (reason, symbol) not in self._credited:
            self._credited.add((reason, symbol))
            self.symbols[symbol] += weight
        if reason not in self.reasons[path]:
            self.files[path] += weight
            self.reasons[path][reason] = weight


@dataclass
class _Frame:
    path: str
    line: int
    function: str


class _Repo:
    """The repository's tracked files and their symbols (parsed on demand, cached by content)."""

    def __init__(self, root: Path, protected: Sequence[str]) -> None:
        self.root = root.resolve()
        self.protected = protected
        self.tracked = {p for p in _tracked(self.root) if protected_by(p, protected) is None}
        self._symbols: dict[str, list[Symbol]] = {}

    def read(self, path: str) -> bytes:
        """The file's bytes, read only through `confine`: a tracked symlink may lead out of the repository."""
        try:
            _, real = confine(self.root, path, self.protected)
            if not real.is_file() or real.stat().st_size > MAX_FILE_BYTES:
                return b""
            return real.read_bytes()
        except (PathRefused, OSError):
            return b""

    def symbols(self, path: str) -> list[Symbol]:
        if path not in self._symbols:
            self._symbols[path] = _parse_cached(path, self.read(path))
        return self._symbols[path]

    def text(self, path: str) -> str:
        return self.read(path).decode("utf-8", errors="replace")

    def resolve(self, raw: str) -> str | None:
        """A path from test output as a tracked repo-relative path, or None when it is outside."""
        raw = raw.strip().strip("'\"").replace("\\", "/")
        if any(marker in raw for marker in _OUTSIDE):
            return None
        if raw.startswith("/"):
            try:
                rel = Path(raw).resolve().relative_to(self.root).as_posix()
                if rel in self.tracked:
                    return rel
            except (ValueError, OSError):
                pass
        parts = PurePosixPath(raw.removeprefix("./")).parts
        # The tests may have run in a worktree elsewhere: the longest tail that is a tracked file.
        for start in range(len(parts)):
            tail = "/".join(parts[start:])
            if tail in self.tracked:
                return tail
        return None

    def innermost(self, path: str, line: int) -> Symbol | None:
        inside = [s for s in self.symbols(path) if s.start_line <= line <= s.end_line]
        return min(inside, key=lambda s: s.end_line - s.start_line, default=None)


def localize(repo: Path, title: str, description: str, test_commands: Sequence[str], failing_output: str,
             index: CodeIndex | None, inputs: Sequence[str] = (), k: int = 5, protected: Sequence[str] = ()) -> Ranking:
    """The files most likely to hold what the task must change, best first, each with its reasons
    and its symbols; `inputs` first, in their order, then at most `k` others (see the module doc).
    `protected`: the service's own repo-relative paths (see `paths.confine`), never read or ranked."""
    root = _Repo(Path(repo), protected)
    tally = _Tally()
    notes: list[str] = []
    candidates = sorted(p for p in root.tracked if _is_source(p) and not is_test_path(p))
    if len(candidates) > MAX_FILES:
        notes.append(f"{len(candidates):,} source files: names matched in the first {MAX_FILES:,} only")
        candidates = candidates[:MAX_FILES]
    names = _NameTable(root, candidates)

    # A traceback pasted into the description counts like one the tests printed.
    frames, failing_tests = _frames(failing_output + "\n" + description[:20_000], root)
    _score_frames(frames, root, tally)
    tests = _test_files(test_commands, failing_output, frames, root)
    _score_tests(tests, failing_tests, frames, root, names, tally)
    _score_mentions(title, W_NAMED_TITLE, "the title", root, names, tally)
    _score_mentions(description, W_NAMED_DESCRIPTION, "the description", root, names, tally)
    _score_search(index, title, description, failing_output, root, tally, notes)

    ordered_inputs = []
    for number, raw in enumerate(inputs):
        path = clean(raw)
        if path and path not in ordered_inputs:
            ordered_inputs.append(path)
            tally.add(path, W_INPUT - number * 0.01, "listed in the task's inputs")
    ranked = sorted((p for p in tally.files if p not in ordered_inputs and not is_test_path(p)),
                    key=lambda p: (-tally.files[p], p))
    chosen = ordered_inputs + [p for p in ranked if tally.files[p] > 0][:k]
    files = [RankedFile(p, tally.files[p], _reasons(tally, p), _symbols_of(tally, p)) for p in chosen]
    ranking = Ranking(files, notes)
    log.info("localized %r: %s", title[:60], ranking.summary())
    return ranking


# -- signals -------------------------------------------------------------------------------------

def _frames(output: str, root: _Repo) -> tuple[list[list[tuple[_Frame, bool]]], set[str]]:
    """In-repo frames of each traceback in the output, each with whether it is the deepest frame
    its style puts first or last; and the names of failing tests that the output mentions."""
    blocks: list[list[tuple[str, _Frame]]] = [[]]
    failing: set[str] = set()
    for line in output.splitlines():
        if _BLOCK.match(line):
            blocks.append([])
        for pattern in (_PYTEST_FAILED, _RUST_TEST, _PYTEST_TITLE):
            found = pattern.match(line)
            if found:
                failing.add(found.groups()[-1].split("[")[0].replace("::", ".").split(".")[-1])
        style, match = _frame_match(line)
        if match is None:
            continue
        path = root.resolve(match.group(1))
        if path is None:
            continue
        number = int(match.group(2))
        function = (match.group(3) if style == "py" and match.lastindex and match.lastindex >= 3 else None) or ""
        if not function or function == "<module>":
            symbol = root.innermost(path, number)
            function = symbol.name if symbol else ""
        blocks[-1].append((style, _Frame(path, number, function)))
    result = []
    for block in blocks:
        if not block:
            continue
        deepest = _deepest(block, root)
        result.append([(frame, frame is deepest) for _, frame in block])
    return result, failing


def _frame_match(line: str) -> tuple[str, re.Match | None]:
    for style, found in (("py", _PY_FRAME.search(line)), ("py", _PYTEST_LOC.match(line)),
                         ("at", _AT_FRAME.match(line)), ("panic", _PANIC.search(line))):
        if found:
            return style, found
    return "", None


def _deepest(block: list[tuple[str, _Frame]], root: _Repo) -> _Frame | None:
    """Python and pytest print the innermost call last; JS and Rust stacks print it first; a panic
    location is where it happened. Test frames are skipped: the fault is in what they call."""
    code = [(style, f) for style, f in block if not _is_test_frame(f, root)]
    panics = [f for style, f in code if style == "panic"]
    if panics:
        return panics[0]
    stacks = [f for style, f in code if style == "at"]
    if stacks:
        return stacks[0]
    return code[-1][1] if code else None


def _is_test_frame(frame: _Frame, root: _Repo) -> bool:
    if is_test_path(frame.path):
        return True
    symbol = root.innermost(frame.path, frame.line)
    return symbol is not None and _is_test_symbol(symbol)


def _score_frames(blocks: list[list[tuple[_Frame, bool]]], root: _Repo, tally: _Tally) -> None:
    per_file: dict[str, int] = defaultdict(int)
    credited: set[tuple[str, int]] = set()  # a panic location and its backtrace line are one frame
    frames = [item for block in blocks for item in block]
    for frame, deepest in sorted(frames, key=lambda item: not item[1]):  # the deepest of every traceback first
        if (frame.path, frame.line) in credited:
            continue
        credited.add((frame.path, frame.line))
        where = f"{frame.path}:{frame.line}" + (f" in {frame.function}" if frame.function else "")
        symbol = root.innermost(frame.path, frame.line)
        if _is_test_frame(frame, root):
            if not is_test_path(frame.path):  # the test lives beside the code (Rust `mod tests`)
                tally.add(frame.path, W_TEST_HOME, f"holds the failing test {symbol.qualname if symbol else where}")
            continue
        if deepest:
            tally.add(frame.path, W_FRAME_DEEPEST, f"deepest traceback frame {where}", symbol)
        elif per_file[frame.path] < MAX_FRAMES_PER_FILE:
            per_file[frame.path] += 1
            tally.add(frame.path, W_FRAME, f"traceback frame {where}", symbol)


class _NameTable:
    """Symbol names of the candidate files: name -> symbols, for matching words and calls."""

    def __init__(self, root: _Repo, paths: Iterable[str]) -> None:
        self.by_name: dict[str, list[Symbol]] = defaultdict(list)
        self.by_lower: dict[str, list[Symbol]] = defaultdict(list)
        self.by_qualname: dict[str, list[Symbol]] = defaultdict(list)
        for path in paths:
            for symbol in root.symbols(path):
                if _is_test_symbol(symbol):
                    continue
                self.by_name[symbol.name].append(symbol)
                self.by_lower[symbol.name.lower()].append(symbol)
                self.by_qualname[symbol.qualname].append(symbol)

    def credit(self, tally: _Tally, symbols: list[Symbol], weight: float, reason: str) -> None:
        """Each file defining the name shares the weight: a name found in one file says the most."""
        files = {s.path for s in symbols}
        for symbol in symbols:
            tally.add(symbol.path, weight / len(files), reason, symbol)

    def lookup(self, dotted: str) -> list[Symbol]:
        """`Foo.bar` or `mod::f`: the exact qualified name when defined, else the last part."""
        name = dotted.replace("::", ".")
        return self.by_qualname.get(name) or self.by_name.get(name.split(".")[-1], [])


def _score_mentions(text: str, weight: float, where: str, root: _Repo, names: _NameTable, tally: _Tally) -> None:
    """Files and names the task's words point at: file names, calls, dotted and backticked names,
    snake_case or camelCase words (code-like, full weight) and plain words (weak)."""
    if not text.strip():
        return
    text = text[:20_000]  # a pasted log in a description: its head says what it is about
    for raw in _FILE_WORD.findall(text):
        path = root.resolve(raw) or _unique_basename(raw, root)
        if path is not None and not is_test_path(path):
            tally.add(path, W_FILE_NAMED, f"named in {where}: {raw}")
    text = _FILE_WORD.sub(" ", text)  # `pager.py` is a file, not a name `py`
    code_like: list[str] = []
    for quoted in _BACKTICK.findall(text):
        code_like += _CALL.findall(quoted) + _DOTTED.findall(quoted) + _WORD.findall(quoted)
    code_like += _CALL.findall(text) + _DOTTED.findall(text)
    code_like += [w for w in _WORD.findall(text) if _CODE_LIKE.search(w)]
    seen: set[str] = set()
    for name in code_like:
        if name in seen:
            continue
        seen.add(name)
        found = names.lookup(name)
        if found:
            names.credit(tally, found, weight, f"named in {where}: {name}")
    named = {n.lower() for n in seen}
    for word in dict.fromkeys(w.lower() for w in _WORD.findall(text) if w.lower() not in named):
        found = names.by_lower.get(word, [])
        if found:
            names.credit(tally, found, W_WORD, f"mentioned in {where}: {found[0].name}")


def _unique_basename(raw: str, root: _Repo) -> str | None:
    base = PurePosixPath(raw).name
    matches = [p for p in root.tracked if PurePosixPath(p).name == base]
    return matches[0] if len(matches) == 1 else None


def _test_files(commands: Sequence[str], output: str, blocks: list[list[tuple[_Frame, bool]]],
                root: _Repo) -> list[str]:
    """Test files the commands name (files, `file::test`, directories), that failing lines name, or
    that hold a frame of a traceback."""
    found: list[str] = []

    def add(path: str | None) -> None:
        if path and path not in found and _is_source(path):
            found.append(path)

    for command in commands:
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        for word in words:
            word = word.split("::")[0].rstrip("/").removeprefix("./")
            if word in root.tracked:
                add(word)
            elif word and not word.startswith("-"):
                under = sorted(p for p in root.tracked if p.startswith(word + "/") and is_test_path(p))
                for path in under[:20]:  # a whole test directory: its first files are enough to see the imports
                    add(path)
    for line in output.splitlines():
        failed = _PYTEST_FAILED.match(line)
        if failed:
            add(root.resolve(failed.group(1)))
    for block in blocks:
        for frame, _ in block:
            if _is_test_frame(frame, root):
                add(frame.path)
    return found


def _score_tests(tests: list[str], failing: set[str], blocks: list[list[tuple[_Frame, bool]]], root: _Repo,
                 names: _NameTable, tally: _Tally) -> None:
    """What the tests import, what the failing test functions call, and what the failing lines call."""
    frames = [frame for block in blocks for frame, _ in block if _is_test_frame(frame, root)]
    for test in tests:
        modules, imported = _imports(test, root.text(test), root)
        for module in modules:
            if not is_test_path(module):
                tally.add(module, W_IMPORTED, f"imported by {test}")
        for module, name in imported:
            # From the module itself, else re-exported (`from pkg import f` with f in pkg/text.py).
            defined = names.by_name.get(name, [])
            found = [s for s in defined if s.path == module] or defined
            if found:
                names.credit(tally, found, W_IMPORTED, f"{test} imports {name}")
    # The failing test functions: named by the output (pytest, cargo) or holding a frame, also
    # in-file tests (Rust `mod tests`).
    functions = {s for test in tests for s in root.symbols(test)
                 if s.name in failing and s.kind in ("function", "method")}
    functions |= {s for f in frames if (s := root.innermost(f.path, f.line)) is not None}
    for function in sorted(functions, key=lambda s: (s.path, s.start_line)):
        body = root.text(function.path).splitlines()[function.start_line - 1: function.end_line]
        _credit_calls("\n".join(body), names, tally, W_CALLED, f"called by the failing test {function.name}")
    for frame in frames:
        text = root.text(frame.path).splitlines()
        if 0 < frame.line <= len(text):
            _credit_calls(text[frame.line - 1], names, tally, W_FAILING_LINE,
                          f"called on the failing line {frame.path}:{frame.line}")


def _credit_calls(code: str, names: _NameTable, tally: _Tally, weight: float, reason: str) -> None:
    for call in dict.fromkeys(_CALL.findall(code)):
        found = [s for s in names.lookup(call) if not _is_test_symbol(s)]
        if found:
            names.credit(tally, found, weight, f"{reason}: {call}")


def _imports(test: str, source: str, root: _Repo) -> tuple[list[str], list[tuple[str, str]]]:
    """The repository files a test imports, and the names it imports (with the file they come
    from, when known) — Python, JavaScript/TypeScript and Rust `use`."""
    modules: list[str] = []
    names: list[tuple[str | None, str]] = []
    language = language_of(test)
    if language == "python":
        for module, parenthesized, listed in _PY_FROM.findall(source):
            base = _py_module(module, test, root)
            items = False  # `from pkg import text` imports the module text, not pkg/__init__.py
            for name in re.findall(r"(\w+)(?:\s+as\s+\w+)?", parenthesized or listed):
                sub = _py_module(f"{module}.{name}" if not module.endswith(".") else module + name, test, root)
                if sub:
                    modules.append(sub)
                else:
                    items = True
                    names.append((base, name))
            if base and items:
                modules.append(base)
        for group in _PY_IMPORT.findall(source):
            for item in group.split(","):
                module = _py_module(item.split(" as ")[0].strip(), test, root)
                if module:
                    modules.append(module)
    elif language in ("javascript", "typescript"):
        for listed, spec in _JS_IMPORT.findall(source):
            module = _js_module(spec, test, root)
            if module:
                modules.append(module)
            names += [(module, n) for n in re.findall(r"\w+", listed) if n not in ("as", "from", "default")]
        for listed, spec in re.findall(r"""(?:const|let|var)\s+\{([^}]*)\}\s*=\s*require\(\s*['"]([^'"]+)""", source):
            names += [(_js_module(spec, test, root), n) for n in re.findall(r"\w+", listed)]
    elif language == "rust":
        for path, listed in _RUST_USE.findall(source):
            module, rest = _rust_module(path.split("::"), root)
            if module:
                modules.append(module)
            for name in [*rest[-1:], *re.findall(r"\w+", listed or "")]:
                if name not in ("self", "super", "crate", "*"):
                    names.append((module, name))
    # A name from a module outside the repository (pytest, a crate) is not the repository's.
    return list(dict.fromkeys(modules)), list(dict.fromkeys((m, n) for m, n in names if m))


def _py_module(module: str, test: str, root: _Repo) -> str | None:
    """`pkg.text` as a tracked file: pkg/text.py or pkg/text/__init__.py, also under src/ or any
    other directory (the shortest such path); a relative `.text` from the test's own package."""
    if module.startswith("."):
        dots = len(module) - len(module.lstrip("."))
        base = PurePosixPath(test).parents[dots - 1] if dots - 1 < len(PurePosixPath(test).parents) else PurePosixPath()
        rel = module.lstrip(".").replace(".", "/")
        wanted = [f"{base / rel}.py", f"{base / rel}/__init__.py"] if rel else [f"{base}/__init__.py"]
        return next((w.removeprefix("./") for w in wanted if w.removeprefix("./") in root.tracked), None)
    rel = module.replace(".", "/")
    if not rel:
        return None
    for wanted in (f"{rel}.py", f"{rel}/__init__.py"):
        matches = sorted((p for p in root.tracked if p == wanted or p.endswith("/" + wanted)), key=lambda p: (len(p), p))
        if matches:
            return matches[0]
    return None


def _js_module(spec: str, test: str, root: _Repo) -> str | None:
    if not spec.startswith("."):
        return None  # a package, not the repository's code
    base = (PurePosixPath(test).parent / spec).as_posix()
    parts: list[str] = []
    for part in base.split("/"):  # normalise `..` by hand: the path need not exist
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    base = "/".join(parts)
    for suffix in ("", ".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx", "/index.js", "/index.ts"):
        if base + suffix in root.tracked:
            return base + suffix
    return None


def _rust_module(segments: list[str], root: _Repo) -> tuple[str | None, list[str]]:
    """`crate::text::ordinal` (or `mycrate::...`): the longest module prefix that is a file
    src/text.rs or src/text/mod.rs, and the segments after it (the item names)."""
    segments = [s for s in segments if s]
    for skip in (1, 0):  # the first segment is usually the crate (`crate`, or the crate's name)
        body = segments[skip:]
        for end in range(len(body), 0, -1):
            rel = "/".join(body[:end])
            for wanted in (f"src/{rel}.rs", f"src/{rel}/mod.rs"):
                matches = sorted((p for p in root.tracked if p == wanted or p.endswith("/" + wanted)), key=lambda p: (len(p), p))
                if matches:
                    return matches[0], body[end:]
    return None, segments[1:]


def _score_search(index: CodeIndex | None, title: str, description: str, output: str, root: _Repo, tally: _Tally,
                  notes: list[str]) -> None:
    """The index's hybrid search over the task's words and the failing assertion lines: a tie-breaker."""
    if index is None:
        return
    assertions = [line.strip() for line in output.splitlines()
                  if re.match(r"^\s*(E\s|>\s|assert|AssertionError|Error|thread '|\s*left:|\s*right:)", line)]
    query = "\n".join([title, description[:1000], *assertions[:10]])[:2000]
    try:
        hits = index.search(query, SEARCH_K)
    except Exception as error:  # the index is a tie-breaker: a broken one must not stop the task
        notes.append(f"code search failed: {error}")
        log.warning("code search failed: %s", error)
        return
    for rank, (symbol, _score) in enumerate(hits):
        if symbol.path in root.tracked and not is_test_path(symbol.path) and not _is_test_symbol(symbol):
            tally.add(symbol.path, W_SEARCH / (rank + 1), f"code search #{rank + 1}: {symbol.qualname}", symbol)


# -- helpers -------------------------------------------------------------------------------------

def _is_test_symbol(symbol: Symbol) -> bool:
    """A test function or class, also inside a module of code (Rust `mod tests`, Python `test_*`)."""
    scope = symbol.qualname.split(".")[:-1]
    return (any(part in ("tests", "test") for part in scope) or symbol.name.startswith("test_")
            or (symbol.kind == "class" and symbol.name.startswith("Test"))
            or (symbol.kind == "module" and symbol.name in ("tests", "test")))


def _is_source(path: str) -> bool:
    return language_of(path) is not None and not any(part in SKIP_DIRS for part in PurePosixPath(path).parts[:-1])


def _tracked(root: Path) -> set[str]:
    try:
        listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("cannot list the files of %s: %s", root, error)
        return set()
    return {p for p in listing.decode("utf-8", "surrogateescape").split("\0") if p}


def _parse_cached(path: str, data: bytes) -> list[Symbol]:
    """parse_symbols, cached by the file's content: a worker localizes task after task in one repo."""
    if not data:
        return []
    key = (path, hashlib.sha1(data).hexdigest())
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    symbols = parse_symbols(path, data)
    _cache[key] = symbols
    if len(_cache) > _CACHE_ENTRIES:
        _cache.popitem(last=False)
    return symbols


def _reasons(tally: _Tally, path: str) -> list[str]:
    found = tally.reasons.get(path, {})
    return sorted(found, key=lambda reason: -found[reason])


def _symbols_of(tally: _Tally, path: str) -> list[Symbol]:
    scored = [(score, s) for s, score in tally.symbols.items() if s.path == path and score > 0]
    scored.sort(key=lambda item: (-item[0], item[1].start_line))
    return [s for _, s in scored[:MAX_SYMBOLS_PER_FILE]]
