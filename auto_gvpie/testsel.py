"""What a task's test commands select, and whether they could run at all.

Three questions the code task kind asks of the user's test commands (never of anything the
model wrote):

- `widen(command)`: the command that runs the *whole* test files a narrow selection picks
  (`pytest t.py::test_a` → `pytest t.py`; `-k`, unittest `mod.Case.test`, `cargo test NAME`,
  `go test -run X`), so an answer that passes the selected test while breaking its neighbours
  is not accepted. None when the command already runs whole files, or when it cannot tell.
- `test_files(command, root)` and `is_test_path(path)`: the files that judge an answer (named by
  the command, or test files by convention), which the model may not edit unless the task lists
  them in `inputs`.
- `cannot_start(...)`: whether a failing baseline shows the tests could not even start in a fresh
  worktree (a git-ignored file missing, a tool not installed) rather than a bug the task may fix.
  The rule errs on the side of attempting the task; see the function.

Commands are read with a small shell scanner that keeps each word's place in the text, so a
rewrite changes only the words it removes or shortens: environment assignments, `cd dir &&`
prefixes, quoting, globs and variables stay exactly as the user wrote them.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Collection, Iterator

from auto_gvpie.paths import PathRefused, clean, confine

__all__ = ["widen", "test_files", "is_test_path", "failing_tests", "cannot_start", "Blocker"]


# -- reading a command line ------------------------------------------------------------------

@dataclass(frozen=True)
class _Word:
    value: str  # as the shell passes it on: quotes removed (variables and globs left as written)
    start: int
    end: int
    op: bool = False  # an operator: ; && || | & ( ) and redirections


_OPS = ("&&", "||", ";;", "|&", ">>", "<<", "&>", ">&", "<&", ";", "&", "|", "<", ">", "(", ")", "\n")
_SEPARATORS = {"&&", "||", ";;", "|&", ";", "&", "|", "(", ")", "\n"}
_REDIRECTS = {">>", "<<", "&>", ">&", "<&", "<", ">"}


def _scan(command: str) -> list[_Word] | None:
    """The words and operators of `command`, or None for what this reader does not follow
    (command substitution, an unclosed quote): the caller then leaves the command alone."""
    words: list[_Word] = []
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in " \t":
            i += 1
            continue
        if command.startswith("\\\n", i):
            i += 2
            continue
        if c == "#":
            end = command.find("\n", i)
            i = n if end < 0 else end
            continue
        op = next((o for o in _OPS if command.startswith(o, i)), None)
        if op is not None:
            words.append(_Word(op, i, i + len(op), True))
            i += len(op)
            continue
        start, value = i, []
        while i < n and command[i] not in " \t\n;&|<>()":
            c = command[i]
            if c == "`" or command.startswith("$(", i):
                return None
            if c == "'":
                close = command.find("'", i + 1)
                if close < 0:
                    return None
                value.append(command[i + 1:close])
                i = close + 1
            elif c == '"':
                i += 1
                while i < n and command[i] != '"':
                    if command[i] == "`" or command.startswith("$(", i):
                        return None
                    if command[i] == "\\" and i + 1 < n and command[i + 1] in '"\\$`\n':
                        value.append(command[i + 1])
                        i += 2
                    else:
                        value.append(command[i])
                        i += 1
                if i >= n:
                    return None
                i += 1
            elif c == "\\":
                if i + 1 < n and command[i + 1] != "\n":
                    value.append(command[i + 1])
                i += 2
            else:
                value.append(c)
                i += 1
        words.append(_Word("".join(value), start, i))
    return words


def _segments(words: list[_Word]) -> list[list[_Word]]:
    """Simple commands, split at ; && || | &, with redirections (and their targets) left out."""
    segments: list[list[_Word]] = [[]]
    skip_next = False
    for index, word in enumerate(words):
        if skip_next:
            skip_next = False
            if not word.op:
                continue
        if word.op and word.value in _SEPARATORS:
            segments.append([])
        elif word.op and word.value in _REDIRECTS:
            current = segments[-1]
            # `2>&1`, `2> err.txt`: the digits glued to the operator name a descriptor, not an argument.
            if current and current[-1].end == word.start and current[-1].value.isdigit():
                current.pop()
            skip_next = True
        elif not word.op:
            segments[-1].append(word)
    return [s for s in segments if s]


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")


def _command_start(words: list[_Word]) -> int:
    """Index of the program in a simple command: past `NAME=value`, `env`, `timeout N`, `nice`,
    `uv run`, `poetry run`, `pipenv run`, `pdm run`."""
    i = 0
    while i < len(words):
        value = words[i].value
        if _ASSIGNMENT.match(value):
            i += 1
        elif value == "env":
            i += 1
            while i < len(words) and (words[i].value.startswith("-") or _ASSIGNMENT.match(words[i].value)):
                i += 1
        elif value in ("timeout", "nice"):
            i += 1
            while i < len(words) and words[i].value.startswith("-"):
                i += 2 if words[i].value in ("-s", "-k", "--signal", "--kill-after", "-n") else 1
            if value == "timeout" and i < len(words):
                i += 1  # the duration
        elif value in ("uv", "poetry", "pipenv", "pdm") and i + 1 < len(words) and words[i + 1].value == "run":
            i += 2
        else:
            return i
    return i


@dataclass
class _Invocation:
    runner: str  # pytest | unittest | cargo | go | python-script | python-module | program
    words: list[_Word]  # the arguments after the runner (for cargo and go: after `test`)
    program: _Word | None = None  # the program word (python-script: the script; python-module: -m's value)


def _invocation(segment: list[_Word]) -> _Invocation | None:
    words = segment[_command_start(segment):]
    if not words:
        return None
    program = words[0]
    name = PurePosixPath(program.value).name
    if name in ("pytest", "py.test"):
        return _Invocation("pytest", words[1:], program)
    if _PYTHON.match(name):
        i = 1
        while i < len(words):
            value = words[i].value
            if value == "-m" and i + 1 < len(words):
                module = words[i + 1]
                rest = words[i + 2:]
                if module.value in ("pytest", "py.test"):
                    return _Invocation("pytest", rest, module)
                if module.value == "unittest":
                    return _Invocation("unittest", rest, module)
                return _Invocation("python-module", rest, module)
            if value in ("-c", "-") or value.startswith("-c"):
                return None
            if not value.startswith("-"):
                return _Invocation("python-script", words[i + 1:], words[i])
            i += 2 if value in ("-W", "-X") else 1
        return None
    if name == "cargo":
        i = 1
        while i < len(words) and (words[i].value.startswith("+") or words[i].value.startswith("-")):
            i += 1
        if i < len(words) and words[i].value in ("test", "t"):
            return _Invocation("cargo", words[i + 1:], program)
        return None
    if name == "go" and len(words) > 1 and words[1].value == "test":
        return _Invocation("go", words[2:], program)
    return _Invocation("program", words[1:], program)


def _invocations(command: str) -> Iterator[tuple[str | None, _Invocation]]:
    """Each recognised simple command with the directory it runs in (relative to where the whole
    command starts; None once a `cd` goes somewhere this reader cannot follow)."""
    words = _scan(command)
    if words is None:
        return
    cwd: str | None = ""
    for segment in _segments(words):
        start = _command_start(segment)
        if start < len(segment) and segment[start].value in ("cd", "pushd"):
            target = [w.value for w in segment[start + 1:]]
            if len(target) == 1 and cwd is not None and not target[0].startswith(("-", "/", "~", "$")):
                cwd = clean(os.path.join(cwd, target[0])) if cwd else clean(target[0])
            else:
                cwd = None
            continue
        invocation = _invocation(segment)
        if invocation is not None:
            yield cwd, invocation


# -- widening a selection to its files --------------------------------------------------------

# Options whose value is the next word (so a value such as `-W error::Warning` is not a node id).
_PYTEST_VALUED = {"-m", "-p", "-c", "-o", "-W", "-r", "--deselect", "--ignore", "--ignore-glob", "--rootdir",
                  "--tb", "--maxfail", "--basetemp", "--confcutdir", "--durations", "--junitxml", "--junit-xml",
                  "--log-level", "--log-cli-level", "--cov-report", "--import-mode", "--override-ini",
                  "--capture", "--color", "--code-highlight", "--timeout", "-n", "--numprocesses", "--dist",
                  "--log-file", "--log-format", "--config-file", "--pythonwarnings", "--cov-config",
                  "--cov-fail-under"}
_CARGO_VALUED = {"-p", "--package", "--test", "--bench", "--example", "--bin", "-F", "--features", "--target",
                 "--manifest-path", "-j", "--jobs", "--profile", "--color", "--message-format", "-Z",
                 "--target-dir", "--config", "--exclude", "--lockfile-path"}
_LIBTEST_VALUED = {"--skip", "--test-threads", "--format", "--logfile", "-Z", "--color"}


class _Edits:
    """Word-level changes to the original text: drop a word (and the blank before it), or swap it."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.changes: list[tuple[int, int, str]] = []

    def drop(self, word: _Word) -> None:
        start = word.start
        while start > 0 and self.command[start - 1] in " \t":
            start -= 1
        self.changes.append((start, word.end, ""))

    def swap(self, word: _Word, text: str) -> None:
        self.changes.append((word.start, word.end, text))

    def result(self) -> str | None:
        if not self.changes:
            return None
        text = self.command
        for start, end, new in sorted(self.changes, reverse=True):
            text = text[:start] + new + text[end:]
        return text


def widen(command: str, root: Path | None = None) -> str | None:
    """The command that runs the whole test files `command` selects, or None when it already does,
    or when this cannot tell (an unknown runner, shell it does not follow). `root`, when given,
    is where the command starts (the worktree): it resolves unittest names to their modules."""
    edits = _Edits(command)
    for cwd, invocation in _invocations(command):
        base = root / cwd if (root is not None and cwd is not None) else None
        if invocation.runner == "pytest":
            _widen_pytest(invocation.words, edits)
        elif invocation.runner == "unittest":
            _widen_unittest(invocation.words, edits, base)
        elif invocation.runner == "cargo":
            _widen_cargo(invocation.words, edits)
        elif invocation.runner == "go":
            _widen_go(invocation.words, edits)
    widened = edits.result()
    return widened if widened is not None and widened.strip() != command.strip() else None


def _pytest_positionals(words: list[_Word]) -> Iterator[tuple[_Word, str]]:
    """(word, kind) for each pytest argument: kind is "k" (a -k selection, with its value word
    following as "k-value"), "path" (a positional) or "option"."""
    i, options = 0, True
    while i < len(words):
        value = words[i].value
        if options and value == "--":
            options = False
            yield words[i], "option"
        elif options and value.startswith("-") and value != "-":
            if value == "-k":
                yield words[i], "k"
                if i + 1 < len(words):
                    i += 1
                    yield words[i], "k-value"
            elif value.startswith("-k") and not value.startswith("--"):
                yield words[i], "k"  # -kexpr, -k=expr
            elif value in _PYTEST_VALUED:
                yield words[i], "option"
                if i + 1 < len(words):
                    i += 1
                    yield words[i], "option"
            else:
                yield words[i], "option"
        else:
            yield words[i], "path"
        i += 1


def _widen_pytest(words: list[_Word], edits: _Edits) -> None:
    parsed = list(_pytest_positionals(words))
    plain = {w.value for w, kind in parsed if kind == "path" and "::" not in w.value}
    seen = set(plain)
    for word, kind in parsed:
        if kind in ("k", "k-value"):
            edits.drop(word)
        elif kind == "path" and "::" in word.value:
            path = word.value.split("::", 1)[0]
            if path in seen:
                edits.drop(word)
            else:
                seen.add(path)
                edits.swap(word, _cut_node_id(edits.command[word.start:word.end], path))


def _cut_node_id(raw: str, path: str) -> str:
    """The written form of a node id's file part: `'a b.py'::t` keeps its quotes as `'a b.py'`, and a
    glob stays a glob; quoted afresh only when the `::` sits inside the quotes."""
    if "::" in raw:
        cut = raw[: raw.index("::")]
        words = _scan(cut)
        if words is not None and len(words) == 1 and not words[0].op and words[0].value == path:
            return cut
    return shlex.quote(path)


def _unittest_module(name: str, base: Path | None) -> str:
    """`pkg.test_mod.Case.test_a` → `pkg.test_mod`: the longest prefix that is a module file
    under `base`, else everything before the first capitalised part (a TestCase class)."""
    parts = name.split(".")
    if base is not None:
        for end in range(len(parts), 0, -1):
            stem = base.joinpath(*parts[:end])
            if stem.with_suffix(".py").is_file() or (stem / "__init__.py").is_file():
                return ".".join(parts[:end])
    for index, part in enumerate(parts):
        if index and part[:1].isupper():
            return ".".join(parts[:index])
    return name


def _widen_unittest(words: list[_Word], edits: _Edits, base: Path | None) -> None:
    i = 0
    seen: set[str] = set()
    discover = bool(words) and words[0].value == "discover"
    while i < len(words):
        word = words[i]
        value = word.value
        if value == "-k" and i + 1 < len(words):
            edits.drop(word)
            edits.drop(words[i + 1])
            i += 2
            continue
        if value.startswith("-k") and not value.startswith("--"):
            edits.drop(word)
        elif value in ("-s", "--start-directory", "-p", "--pattern", "-t", "--top-level-directory"):
            i += 2
            continue
        elif not discover and not value.startswith("-") and "/" not in value and not value.endswith(".py"):
            module = _unittest_module(value, base)
            if module in seen:
                edits.drop(word)
            elif module != value:
                seen.add(module)
                edits.swap(word, shlex.quote(module))
            else:
                seen.add(module)
        i += 1


def _widen_cargo(words: list[_Word], edits: _Edits) -> None:
    """`cargo test NAME` → `cargo test` (a bare filter picks tests across the whole crate, so "its
    file" is the crate's tests); `cargo test --test api NAME` → `cargo test --test api` (an
    integration test target is one file, tests/api.rs); arguments after `--` lose their filters
    and `--exact`, and keep the rest (`--nocapture`, `--test-threads 1`)."""
    try:
        split = next(i for i, w in enumerate(words) if w.value == "--")
    except StopIteration:
        split = len(words)
    cargo, libtest = words[:split], words[split + 1:]
    i = 0
    while i < len(cargo):
        value = cargo[i].value
        if value in _CARGO_VALUED:
            i += 2
            continue
        if not value.startswith("-"):
            edits.drop(cargo[i])
        i += 1
    kept = 0
    i = 0
    while i < len(libtest):
        value = libtest[i].value
        if value in _LIBTEST_VALUED:
            kept += 1
            i += 2
            continue
        if value == "--exact" or not value.startswith("-"):
            edits.drop(libtest[i])
        else:
            kept += 1
        i += 1
    if split < len(words) and not kept and libtest:
        edits.drop(words[split])  # a `--` with nothing left after it


def _widen_go(words: list[_Word], edits: _Edits) -> None:
    i = 0
    while i < len(words):
        value = words[i].value
        if value in ("-run", "--run", "-test.run"):
            edits.drop(words[i])
            if i + 1 < len(words):
                edits.drop(words[i + 1])
            i += 2
            continue
        if value.split("=", 1)[0] in ("-run", "--run", "-test.run") and "=" in value:
            edits.drop(words[i])
        i += 1


# -- which files judge an answer ----------------------------------------------------------------

_TEST_DIRS = {"tests", "test", "__tests__", "spec", "specs"}
_TEST_NAMES = ("test_*.py", "*_test.py", "tests.py", "conftest.py", "*_test.go", "*_test.rb", "*_spec.rb",
               "*.test.js", "*.test.jsx", "*.test.ts", "*.test.tsx", "*.test.mjs", "*.test.cjs",
               "*.spec.js", "*.spec.jsx", "*.spec.ts", "*.spec.tsx", "*.spec.mjs", "*.spec.cjs",
               "*Test.java", "*Tests.java", "*Test.kt", "*Tests.cs", "*_test.exs", "*_test.dart")


def is_test_path(path: str) -> bool:
    """A test file by convention: anything under a `tests/`, `test/`, `__tests__/` or `spec/`
    directory (Rust's `tests/*.rs` among them, fixtures too), `conftest.py`, `test_*.py`,
    `*_test.py`, `*_test.go`, `*.test.js` / `*.spec.ts` and their kin."""
    parts = PurePosixPath(clean(path)).parts
    if not parts:
        return False
    if any(part.lower() in _TEST_DIRS for part in parts[:-1]):
        return True
    return any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in _TEST_NAMES)


def test_files(command: str, root: Path) -> list[str]:
    """The existing repo-relative files `command` names as tests: pytest paths and node ids
    (`tests/test_x.py` from `pytest tests/test_x.py::t`; a directory brings its conventional test
    files), unittest modules, a script run by python, `bash` or `./`, `cargo test --test NAME`
    (`tests/NAME.rs`), and the `*_test.go` files of `go test` packages."""
    root = Path(root).resolve()
    found: list[str] = []
    for cwd, invocation in _invocations(command):
        if cwd is None:
            continue
        for rel in _named(invocation, root, cwd):
            if rel in found:
                continue
            try:
                rel, real = confine(root, rel)
            except (PathRefused, OSError):
                continue
            if real.is_file() and rel not in found:
                found.append(rel)
    return found


def _join(cwd: str, path: str) -> str:
    return clean(os.path.join(cwd, path)) if cwd else clean(path)


def _tests_below(root: Path, rel: str) -> Iterator[str]:
    base = root / rel if rel else root
    for top, dirs, names in os.walk(base, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("node_modules", "target",
                                                                               "__pycache__", "venv"))
        for name in sorted(names):
            candidate = (Path(top) / name).relative_to(root).as_posix()
            if is_test_path(candidate):
                yield candidate


def _named(invocation: _Invocation, root: Path, cwd: str) -> Iterator[str]:
    words = [w.value for w in invocation.words]
    if invocation.runner == "pytest":
        for word, kind in _pytest_positionals(invocation.words):
            if kind == "path" and not word.value.startswith("-"):
                rel = _join(cwd, word.value.split("::", 1)[0])
                if rel and (root / rel).is_dir():
                    yield from _tests_below(root, rel)
                elif rel:
                    yield rel
    elif invocation.runner == "unittest":
        if words and words[0] == "discover":
            # discover [-s START] [-p PATTERN] [-t TOP] [START [PATTERN [TOP]]]
            options, positional, i = {}, [], 1
            while i < len(words):
                if words[i] in ("-s", "--start-directory", "-p", "--pattern", "-t", "--top-level-directory"):
                    options[words[i].lstrip("-")[0]] = words[i + 1] if i + 1 < len(words) else ""
                    i += 2
                    continue
                if not words[i].startswith("-"):
                    positional.append(words[i])
                i += 1
            start = options.get("s") or (positional[0] if positional else ".")
            pattern = options.get("p") or (positional[1] if len(positional) > 1 else "test*.py")
            base = _join(cwd, start)
            if (root / base).is_dir():
                for top, dirs, names in os.walk(root / base if base else root, followlinks=False):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(names):
                        if fnmatch.fnmatchcase(name, pattern):
                            yield (Path(top) / name).relative_to(root).as_posix()
        else:
            for word in words:
                if word.startswith("-"):
                    continue
                if "/" in word or word.endswith(".py"):
                    yield _join(cwd, word)
                    continue
                module = _unittest_module(word, root / cwd if cwd else root)
                yield _join(cwd, module.replace(".", "/") + ".py")
                yield _join(cwd, module.replace(".", "/") + "/__init__.py")
    elif invocation.runner == "python-script" and invocation.program is not None:
        yield _join(cwd, invocation.program.value)
    elif invocation.runner == "python-module" and invocation.program is not None:
        yield _join(cwd, invocation.program.value.replace(".", "/") + ".py")
    elif invocation.runner == "cargo":
        manifest_dir = cwd
        for i, word in enumerate(words):
            if word == "--manifest-path" and i + 1 < len(words):
                manifest_dir = _join(cwd, str(PurePosixPath(words[i + 1]).parent))
            elif word.startswith("--manifest-path="):
                manifest_dir = _join(cwd, str(PurePosixPath(word.split("=", 1)[1]).parent))
        for i, word in enumerate(words):
            name = words[i + 1] if word == "--test" and i + 1 < len(words) else (
                word.split("=", 1)[1] if word.startswith("--test=") else None)
            if name:
                yield _join(manifest_dir, f"tests/{name}.rs")
                yield _join(manifest_dir, f"tests/{name}/main.rs")
    elif invocation.runner == "go":
        for word in words:
            if word.startswith("./") or word in (".", "./..."):
                recursive = word.endswith("/...")
                rel = _join(cwd, word[:-4] if recursive else word)
                base = root / rel if rel else root
                if not base.is_dir():
                    continue
                dirs_to_scan = [base] if not recursive else [Path(t) for t, _, _ in os.walk(base, followlinks=False)]
                for directory in dirs_to_scan:
                    for path in sorted(directory.glob("*_test.go")):
                        yield path.relative_to(root).as_posix()
    elif invocation.runner == "program" and invocation.program is not None:
        program = invocation.program.value
        if "/" in program:
            yield _join(cwd, program)  # ./check.sh, scripts/test.sh
        elif program in ("bash", "sh", "zsh", "node", "ruby", "perl", "deno", "bun", "Rscript"):
            script = next((w for w in words if not w.startswith("-") and w not in ("run", "test")), None)
            if script:
                yield _join(cwd, script)


test_files.__test__ = False  # type: ignore[attr-defined]  # pytest would collect it where it is imported


# -- which tests failed -------------------------------------------------------------------------

_FAILED = (
    re.compile(r"^(?:FAILED|ERROR) (\S+?)(?: - .*)?$", re.M),  # pytest's short summary
    re.compile(r"^test (\S+) \.\.\. FAILED$", re.M),  # cargo / libtest
    re.compile(r"^\s*--- FAIL: (\S+)", re.M),  # go test
    re.compile(r"^(?:FAIL|ERROR): (\w+) \(([\w.]+)\)", re.M),  # unittest
)


def failing_tests(output: str) -> list[str]:
    """The names of the failing tests in a test run's output, where the runner says them
    (pytest node ids, cargo test names, go tests, unittest `mod.Case.test`); [] when none are named."""
    names: list[str] = []
    for pattern in _FAILED:
        for match in pattern.finditer(output):
            if pattern.groups == 2:  # unittest: "test_a (mod.Case)", or since 3.11 "test_a (mod.Case.test_a)"
                test, where = match.group(1), match.group(2)
                name = where if where.endswith("." + test) else f"{where}.{test}"
            else:
                name = match.group(1)
            if name not in names:
                names.append(name)
    return names


# -- could the tests start at all? ----------------------------------------------------------------

@dataclass(frozen=True)
class Blocker:
    """Why a baseline run says the tests cannot start in a fresh worktree."""
    line: str  # the error line that shows it
    hint: str  # what to do about it, as specifically as the output allows

    def __post_init__(self) -> None:
        # pytest marks error lines "E   ..."; the message quotes the error itself.
        object.__setattr__(self, "line", re.sub(r"^E\s+", "", self.line.strip()))


_NOT_FOUND = re.compile(r"^(?:\S*sh: )?(?:line \d+: )?([^\s:]+): (command not found|No such file or directory|"
                        r"Permission denied)\s*$", re.M)
_NO_MODULE = re.compile(r"^.*(?:\b(?:ModuleNotFoundError|ImportError)|python[\d.]*): No module named '?([\w.]+)'?.*$",
                        re.M)
_MISSING_FILE = re.compile(r"^.*(?:No such file or directory|can't open file|Cannot find module|"
                           r"FileNotFoundError)\b.*?['\"]([^'\"]+)['\"].*$", re.M)
_COLLECTING = re.compile(r"^_*\s*ERROR collecting (\S+?)(?:\s+_+)?\s*$", re.M)
_CARGO_NETWORK = re.compile(r"^.*(?:failed to (?:get|download|fetch|load source for|select a version|update)|"
                            r"Unable to update registry|no matching package named|spurious network error|"
                            r"Could not resolve host).*$", re.M)
_NETWORK = re.compile(r"^.*(?:Temporary failure in name resolution|Name or service not known|Network is unreachable|"
                      r"Could not resolve host|dial tcp|getaddrinfo (?:ENOTFOUND|EAI_AGAIN)).*$", re.M)
_CANNOT_COMPILE = re.compile(r"^.*could not compile `([^`]+)`.*$", re.M)
_LINKER = re.compile(r"^.*(?:linker `[^`]+` not found|error: no such command: `[^`]+`).*$", re.M)
_UNRECOGNIZED = re.compile(r"^.*error: unrecognized arguments:.*$", re.M)

SETTINGS_HINT = ("If they need git-ignored files or a build step, set copy_ignored / setup in gvpie.toml "
                 "(README: 'When the tests need a build step').")


def cannot_start(command: str, exit_code: int | None, output: str, *, worktree: Path, checkout: Path,
                 tracked: Collection[str]) -> Blocker | None:
    """A Blocker when a failing run shows the tests could not even start in the fresh worktree for a
    reason no edit to the repository's code can fix; None when the task should be attempted.

    The rule. A baseline that fails is usually the task itself (the bug it asks to fix: a failing
    assertion, a SyntaxError or a bad import in a tracked module, a test file or module the task
    is to create), and mistaking that for a broken environment would stop the whole queue, so
    only these count as "cannot start":
    - a program the command runs is not installed (bash: `pytest: command not found`, exit
      126/127), when it is a bare name looked up on PATH; a missing `./script` may be the task's
      to create, unless the checkout has it untracked;
    - a Python module, or any file an error line quotes, that the user's checkout has but git does
      not track (so the worktree lacks it: `_version.py`, `.env`), or that git ignores (so a build
      step makes it); a module found nowhere may be a typo the task fixes, or one it creates, and
      is attempted;
    - pytest or unittest themselves missing; pytest refusing an option (a plugin not installed);
      pytest collecting a file that is not part of the repository;
    - cargo unable to fetch dependencies, a dependency (not one of the repository's own
      packages) that does not compile, a missing linker or cargo subcommand;
    - a name lookup or connection failure (the sandbox has no network unless allowed).
    """
    if exit_code is None or exit_code == 0:
        return None
    checkout = Path(checkout).resolve()
    worktree = Path(worktree).resolve()
    tracked = set(tracked)

    def rel_of(raw: str) -> str | None:
        path = Path(raw)
        if path.is_absolute():
            for base in (worktree, checkout):
                if path.is_relative_to(base):
                    return path.relative_to(base).as_posix()
            return None
        rel = clean(raw)
        return rel if rel and not rel.startswith("..") else None

    def untracked_in_checkout(rel: str) -> bool:
        """The checkout has `rel` (a file, or a directory without tracked files) and the worktree not."""
        if rel in tracked or any(t.startswith(rel + "/") for t in tracked) or (worktree / rel).exists():
            return False
        try:
            directory = checkout / rel
            if directory.is_dir() and not directory.is_symlink():
                return directory.resolve().is_relative_to(checkout) and ".git" not in PurePosixPath(rel).parts
            return confine(checkout, rel)[1].is_file()
        except (PathRefused, OSError):
            return False

    def ignored(rel: str) -> bool:
        if rel in tracked:
            return False
        return subprocess.run(["git", "-C", str(worktree), "check-ignore", "-q", "--", rel],
                              capture_output=True).returncode == 0

    def copy_hint(rel: str) -> str:
        if PurePosixPath(rel).parts[0] == "node_modules":
            rel = "node_modules"
        return (f"{rel} is in your checkout but git does not track it, so a fresh worktree lacks it: add "
                f'copy_ignored = ["{rel}"] to gvpie.toml (or a setup command that makes it, or commit it).')

    def build_hint(rel: str) -> str:
        return (f"git ignores {rel}, so something builds it: set setup in gvpie.toml to the command that "
                f"makes it (it runs in the worktree before the tests), or copy_ignored to copy it from your "
                f"checkout.")

    if exit_code in (126, 127):
        for match in _NOT_FOUND.finditer(output):
            program = match.group(1)
            if "/" not in program and not (worktree / program).exists():
                return Blocker(match.group(0).strip(), f"{program} is not installed where Auto-GVPIE runs the "
                                                        "tests (or not on its PATH): install it, or write its "
                                                        "full path in the task's tests.")
            rel = rel_of(program)
            if rel and untracked_in_checkout(rel):
                return Blocker(match.group(0).strip(), copy_hint(rel))

    for match in _NO_MODULE.finditer(output):
        module = match.group(1)
        line = match.group(0).strip()
        if module.split(".")[0] in ("pytest", "_pytest"):
            return Blocker(line, "pytest is not installed for the Python that runs the tests: install it, or "
                                 "name that Python's full path in the task's tests.")
        for rel in _module_files(module, checkout):
            if untracked_in_checkout(rel):
                return Blocker(line, copy_hint(rel))
        for rel in _module_files(module, None):
            if not (worktree / rel).exists() and ignored(rel):
                return Blocker(line, build_hint(rel))

    for match in _MISSING_FILE.finditer(output):
        raw = match.group(1)
        rel = rel_of(raw)
        if rel is None:
            continue
        candidates = [rel] if "/" in raw or "." in PurePosixPath(raw).name else [rel, f"node_modules/{rel}"]
        for candidate in candidates:
            if untracked_in_checkout(candidate):
                return Blocker(match.group(0).strip(), copy_hint(candidate))

    unrecognized = _UNRECOGNIZED.search(output)
    if unrecognized and exit_code == 4:
        return Blocker(unrecognized.group(0).strip(), "pytest does not know an option in the command: a plugin "
                                                      "the tests need is not installed for the Python that runs "
                                                      "them.")
    for match in _COLLECTING.finditer(output):
        rel = rel_of(match.group(1))
        if rel and rel not in tracked and not any(t.startswith(rel.rstrip("/") + "/") for t in tracked):
            return Blocker(match.group(0).strip(" _"), f"pytest collects {rel}, which is not part of the "
                                                       "repository (made by the setup command, or copied): point "
                                                       "the tests at the tracked test files.")

    network = _CARGO_NETWORK.search(output) or _NETWORK.search(output)
    if network:
        return Blocker(network.group(0).strip(), "the tests reach for the network, which the sandbox turns off: "
                                                 "set sandbox_network = true in gvpie.toml, or fetch what they "
                                                 "need once in your checkout (cargo fetch, go mod download).")
    linker = _LINKER.search(output)
    if linker:
        return Blocker(linker.group(0).strip(), "a tool the build needs is not installed where Auto-GVPIE runs "
                                                "the tests.")
    compile_errors = list(_CANNOT_COMPILE.finditer(output))
    if compile_errors:
        own = _cargo_packages(worktree, tracked)
        for match in compile_errors:
            package = match.group(1).split(" ")[0]
            if package not in own:
                return Blocker(match.group(0).strip(), f"the dependency {package} does not build here (a system "
                                                       "library or tool it needs may be missing).")
    return None


def _module_files(module: str, checkout: Path | None) -> list[str]:
    """Where a Python module could live in a repository: `a/b.py`, `a/b/__init__.py`, under `src/`
    too, and (given a checkout to look in) compiled extensions `a/b.*.so` / `.pyd`. (No guessed
    extension names otherwise: the usual Python .gitignore ignores `*.so`, which would make every
    missing module look like a build output.)"""
    stem = module.replace(".", "/")
    found = []
    for prefix in ("", "src/"):
        found += [f"{prefix}{stem}.py", f"{prefix}{stem}/__init__.py"]
        if checkout is not None:
            parent = checkout / prefix / PurePosixPath(stem).parent
            name = PurePosixPath(stem).name
            if parent.is_dir():
                for pattern in (f"{name}.*.so", f"{name}.so", f"{name}.*.pyd", f"{name}.pyd"):
                    found += [p.relative_to(checkout).as_posix() for p in sorted(parent.glob(pattern))]
    return found


def _cargo_packages(worktree: Path, tracked: Collection[str]) -> set[str]:
    """The names of the repository's own cargo packages (from its tracked Cargo.toml files)."""
    names = set()
    for rel in tracked:
        if PurePosixPath(rel).name != "Cargo.toml":
            continue
        try:
            data = tomllib.loads((worktree / rel).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        name = (data.get("package") or {}).get("name")
        if isinstance(name, str):
            names.add(name)
    return names
