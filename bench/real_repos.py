"""Benchmark on real repositories (issue 11): single injected bugs in released pure-Python projects.

Built the way SWE-smith builds its tasks: take a released project with a real test suite (the
pinned sdists in bench/real_repos_pins.toml, fetched from PyPI and checked by SHA-256), inject one
realistic bug with `ast` (a flipped comparison, an off-by-one, a dropped branch, a function body
replaced by `return None`), and keep the task only when the whole suite passes on the original and
at least one test fails on the mutant. Only this generator and the pins are shipped, not the sdists.

    PY=.venv/bin/python
    $PY bench/real_repos.py generate --out ~/.cache/auto-gvpie/bench/suite --seed 0 --count 24
    $PY bench/real_repos.py verify --suite ~/.cache/auto-gvpie/bench/suite
    $PY bench/real_repos.py run --suite ~/.cache/auto-gvpie/bench/suite --config off3 --llm embedded
    $PY bench/real_repos.py run --suite S --config on3 --llm http://127.0.0.1:8000/v1      # memory on
    $PY bench/real_repos.py run --suite S --config off3-n4 --llm URL --samples 4 --no-memory
    $PY bench/real_repos.py aider --suite S --url http://127.0.0.1:8000/v1
    $PY bench/real_repos.py report results/*.json      # writes the real_repos section of docs/BENCHMARKS.md

`generate` writes, per task, `DIR/<id>/repo` (a git repository whose single commit, HEAD, holds the
bug), `DIR/<id>/task.json` (the task as a user would queue it) and `DIR/<id>/fix.json` (the
injected change, to verify the task and for `--llm oracle`; never shown to an agent), plus
`DIR/manifest.json`. Tasks alternate between two kinds: "named" (inputs = the file, title
"Fix <function> in <file>") and "report" (no inputs; a bug report written from the failing test's
assertion, and `tests: ["python -m pytest -q <test file>::<test>"]`).

`run` drives the real engine (the same `Engine` agent_bench.py uses: worktrees, edits, tests) on
a fresh copy of each task's repository, with the patch applied to that checkout, then judges it
itself. Solved = the task's tests pass, the whole test files of the failing tests pass, and no test
file was changed (`git diff` in the checkout). It records wall time, attempts, the prompt tokens of
each model call (counted by a wrapper around the LLM client, exact for the embedded model and for
servers that report usage), and localisation: the ranking the engine stored in its attempt files
(a `localisation`/`localization` key) when there is one, else the repository files in the prompt
in the order shown, else the task's inputs; top-1/top-3 = the injected file among the first 1/3.
`--llm` takes `embedded`, an OpenAI-compatible URL, or `oracle` (a scripted model that answers
the injected change reversed, as a SEARCH/REPLACE block: it checks the harness, not a model).

The model server, for `run --llm URL` and for the Aider baseline alike (docs/local_model.md):

    MODEL=$(.venv/bin/python -m auto_gvpie.llm.model_files)
    .venv/bin/python -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port 8000 --n_ctx 8192

Aider (the baseline) lives in its own virtual environment, outside the repository:

    python3.11 -m venv ~/.cache/auto-gvpie/bench/aider-venv
    ~/.cache/auto-gvpie/bench/aider-venv/bin/pip install aider-chat

`aider` runs, in a fresh copy of each task's repository,
`aider --yes-always --no-auto-commits --no-dirty-commits --auto-test --test-cmd CMD --model
openai/<id> --openai-api-base URL --openai-api-key local --message "<title + description>"
[the file, for named tasks]` and judges the result with the same rule (prompt tokens from Aider's
"Tokens: N sent" lines; localisation = the non-test files it changed).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import hashlib
import io
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tokenize
import tomllib
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = Path(__file__).resolve().with_name("real_repos_pins.toml")
CACHE = Path.home() / ".cache" / "auto-gvpie" / "bench"
AIDER_VENV = CACHE / "aider-venv"
KINDS = ("compare", "off_by_one", "drop_branch", "remove_body")
TEST_RUN_TIMEOUT = 120.0
GITIGNORE = "__pycache__/\n*.pyc\n.pytest_cache/\n.gvpie/\n.aider*\n"
_GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@localhost", "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
            "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}


# == pins and sdists ==============================================================================

@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sdist: str
    sha256: str
    sources: tuple[str, ...]
    tests: str
    exclude: tuple[str, ...] = ()
    pytest_args: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def pytest(self, *targets: str) -> str:
        """The shell command a user would type to run `targets` (the suite's own runner)."""
        return " ".join(["python -m pytest -q", *self.pytest_args, *(shlex.quote(t) for t in targets)])


def load_pins(path: Path = PINS) -> list[Pin]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return [Pin(p["name"], p["version"], p["sdist"], p["sha256"], tuple(p["sources"]), p["tests"],
                tuple(p.get("exclude", ())), tuple(p.get("pytest_args", ()))) for p in data["project"]]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist(pin: Pin, cache: Path = CACHE) -> Path:
    """The pinned sdist, downloaded once with pip into the cache; refused unless its SHA-256 matches."""
    folder = cache / "sdists"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / pin.sdist
    if not path.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"{pin.name}=={pin.version}", "-d", str(folder)], check=True)
    if not path.exists():
        raise SystemExit(f"{pin.label}: pip downloaded no {pin.sdist} into {folder}")
    actual = sha256_of(path)
    if actual != pin.sha256:
        raise SystemExit(f"{pin.label}: {path} has SHA-256 {actual}, the pin says {pin.sha256}; "
                         f"delete the file to download it again")
    return path


def unpack(pin: Pin, sdist: Path, dest: Path) -> Path:
    """The sdist's tree at `dest` (its top folder stripped); checks that it holds the test suite."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.isfile() or m.isdir()]
        top = os.path.commonpath([m.name for m in members])
        for member in members:
            rel = os.path.relpath(member.name, top)
            if rel == "." or rel.startswith("..") or os.path.isabs(rel):
                continue
            target = dest / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    if not (dest / pin.tests).exists() or not test_files_of(dest, pin):
        raise SystemExit(f"{pin.label}: the sdist holds no test suite at {pin.tests!r}")
    return dest


def source_files(tree: Path, pin: Pin) -> list[str]:
    found = sorted({p.relative_to(tree).as_posix() for pattern in pin.sources for p in tree.glob(pattern)})
    return [f for f in found if not any(fnmatch.fnmatchcase(f, x) for x in pin.exclude)]


def test_files_of(tree: Path, pin: Pin) -> list[str]:
    root = tree / pin.tests
    if root.is_file():
        return [pin.tests]
    return sorted(p.relative_to(tree).as_posix() for p in root.rglob("test_*.py"))


def tests_for(module: str, tree: Path, pin: Pin) -> list[str]:
    """The test files that test `module` (named after it), else the whole suite."""
    stem = Path(module).stem
    if stem == "__init__":
        stem = Path(module).parent.name
    files = test_files_of(tree, pin)
    mine = [f for f in files if Path(f).stem.removeprefix("test_").startswith(stem)]
    return mine or files


def is_test_path(path: str) -> bool:
    parts = Path(path).parts
    name = parts[-1] if parts else ""
    return (any(p in ("tests", "test", "testing") for p in parts[:-1]) or name == "conftest.py"
            or fnmatch.fnmatch(name, "test_*.py") or fnmatch.fnmatch(name, "*_test.py"))


# == mutations =====================================================================================

@dataclass(frozen=True)
class Mutation:
    file: str
    function: str  # qualified name of the enclosing function
    kind: str  # one of KINDS
    detail: str  # what changed, in words ("`<` -> `<=`", "dropped the else branch", ...)
    line: int  # first line changed (1-based)
    start: int  # character offsets of the replaced span in the original text
    end: int
    replacement: str

    def apply(self, text: str) -> str:
        return text[:self.start] + self.replacement + text[self.end:]

    @property
    def key(self) -> str:
        return f"{self.file}:{self.line}:{self.kind}:{self.start}"


_FLIP = {ast.Lt: (ast.LtE, "<", "<="), ast.LtE: (ast.Lt, "<=", "<"), ast.Gt: (ast.GtE, ">", ">="),
         ast.GtE: (ast.Gt, ">=", ">"), ast.Eq: (ast.NotEq, "==", "!="), ast.NotEq: (ast.Eq, "!=", "==")}


class _Source:
    """Offsets in a text from ast's (line, column-in-UTF-8-bytes) positions."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, line: int, col_bytes: int) -> int:
        raw = self.lines[line - 1].encode("utf-8")[:col_bytes]
        return self.starts[line - 1] + len(raw.decode("utf-8"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def line_start(self, line: int) -> int:
        return self.starts[line - 1]

    def line_end(self, line: int) -> int:
        return self.starts[line]

    def indent(self, line: int) -> str:
        text = self.lines[line - 1]
        return text[:len(text) - len(text.lstrip())]


def _functions(tree: ast.AST):
    """(qualified name, function node) for every function, methods and nested ones included."""
    def walk(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)
    yield from walk(tree, "")


def _own_nodes(func: ast.AST):
    """Nodes in `func`'s body, not in nested functions or classes, nor inside f-strings."""
    stack = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.JoinedStr)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _docstring_len(func: ast.AST) -> int:
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return 1
    return 0


def _same_tree(a: ast.AST, b: ast.AST) -> bool:
    return ast.dump(a, include_attributes=False) == ast.dump(b, include_attributes=False)


def _operator_offset(src: _Source, start: int, end: int, symbol: str) -> int | None:
    """Where `symbol` stands as an operator token between two operands (comments skipped)."""
    segment = src.text[start:end]
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(segment).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        tokens = []
    lines = segment.splitlines(keepends=True)
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line))
    for tok in tokens:
        if tok.type == tokenize.OP and tok.string == symbol:
            return start + line_starts[tok.start[0] - 1] + tok.start[1]
    return None


def find_mutations(rel: str, text: str) -> list[Mutation]:
    """Every mutation of the four kinds this file offers, inside functions, in source order."""
    tree = ast.parse(text)
    src = _Source(text)
    found: list[Mutation] = []
    for qualname, func in _functions(tree):
        if func.body[0].lineno == func.lineno:
            continue  # a one-line def
        for node in _own_nodes(func):
            if isinstance(node, ast.Compare):
                found.extend(_compare_mutations(rel, qualname, node, src))
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_int(node.operand):
                found.append(_int_mutation(rel, qualname, node, -node.operand.value, src))
            elif _is_int(node) and not _negated(node, func):
                found.append(_int_mutation(rel, qualname, node, node.value, src))
            elif isinstance(node, ast.Slice):
                for bound in (node.lower, node.upper):
                    if bound is not None and not _is_int(bound) and not isinstance(bound, ast.UnaryOp):
                        found.append(_slice_mutation(rel, qualname, bound, src))
            if isinstance(node, ast.If):
                found.extend(_branch_mutations(rel, qualname, node, func, src))
        body = _body_mutation(rel, qualname, func, src)
        if body is not None:
            found.append(body)
    return sorted(found, key=lambda m: (m.start, m.kind, m.detail))


def _is_int(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def _negated(node: ast.AST, func: ast.AST) -> bool:
    """A constant that is the operand of a unary minus (handled with the minus)."""
    for parent in _own_nodes(func):
        if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub) and parent.operand is node:
            return True
    return False


def _compare_mutations(rel: str, qualname: str, node: ast.Compare, src: _Source) -> list[Mutation]:
    out = []
    for i, op in enumerate(node.ops):
        flip = _FLIP.get(type(op))
        if flip is None:
            continue
        _, old, new = flip
        left = node.left if i == 0 else node.comparators[i - 1]
        right = node.comparators[i]
        at = _operator_offset(src, src.span(left)[1], src.span(right)[0], old)
        if at is None:
            continue
        line = src.text.count("\n", 0, at) + 1
        out.append(Mutation(rel, qualname, "compare", f"`{old}` -> `{new}`", line, at, at + len(old), new))
    return out


def _int_mutation(rel: str, qualname: str, node: ast.AST, value: int, src: _Source) -> Mutation:
    start, end = src.span(node)
    delta = 1 if value == 0 else (1 if (start * 7 + value) % 2 else -1)  # a fixed, position-dependent pick
    new = value + delta
    text = str(new)
    return Mutation(rel, qualname, "off_by_one", f"`{src.text[start:end]}` -> `{text}`", node.lineno, start, end, text)


def _slice_mutation(rel: str, qualname: str, bound: ast.AST, src: _Source) -> Mutation:
    start, end = src.span(bound)
    old = src.text[start:end]
    simple = isinstance(bound, (ast.Name, ast.Attribute, ast.Call, ast.Subscript))
    delta = "+ 1" if start % 2 else "- 1"
    new = f"{old} {delta}" if simple else f"({old}) {delta}"
    return Mutation(rel, qualname, "off_by_one", f"slice bound `{old}` -> `{new}`", bound.lineno, start, end, new)


def _keyword_line(src: _Source, first: int, last: int, keyword: str, indent: str) -> int | None:
    """The line in [first, last] (searched backwards) that opens an `else:` or `elif` at `indent`."""
    for line in range(last, first - 1, -1):
        text = src.lines[line - 1]
        if text.startswith(indent) and re.match(rf"{keyword}\b", text[len(indent):]):
            return line
    return None


def _branch_mutations(rel: str, qualname: str, node: ast.If, func: ast.AST, src: _Source) -> list[Mutation]:
    """Drop an `elif` or `else` clause of this `if`, or (for a plain `if` among other statements)
    the whole `if` statement. Whole lines only."""
    out = []
    indent = src.indent(node.lineno)
    is_elif = not src.lines[node.lineno - 1][len(indent):].startswith("if")
    if node.orelse:
        first_else = node.orelse[0]
        elif_clause = len(node.orelse) == 1 and isinstance(first_else, ast.If) and \
            src.lines[first_else.lineno - 1][len(src.indent(first_else.lineno)):].startswith("elif")
        if elif_clause:
            # drop this elif clause: from its `elif` line to the line before the next clause
            nxt = first_else
            if nxt.orelse:
                after = nxt.orelse[0]
                if isinstance(after, ast.If) and len(nxt.orelse) == 1 and \
                        src.lines[after.lineno - 1][len(src.indent(after.lineno)):].startswith("elif"):
                    stop = after.lineno - 1
                else:
                    else_line = _keyword_line(src, nxt.body[-1].end_lineno, after.lineno, "else", indent)
                    stop = (else_line - 1) if else_line else None
            else:
                stop = nxt.body[-1].end_lineno
            if stop is not None and stop >= nxt.lineno:
                out.append(Mutation(rel, qualname, "drop_branch", f"dropped the `elif` branch at line {nxt.lineno}",
                                    nxt.lineno, src.line_start(nxt.lineno), src.line_end(stop), ""))
        else:
            else_line = _keyword_line(src, node.body[-1].end_lineno, first_else.lineno, "else", indent)
            if else_line is not None and first_else.lineno > else_line:
                stop = node.orelse[-1].end_lineno
                out.append(Mutation(rel, qualname, "drop_branch", f"dropped the `else` branch at line {else_line}",
                                    else_line, src.line_start(else_line), src.line_end(stop), ""))
    elif not is_elif and node.body[0].lineno > node.lineno:
        parent = _parent_block(func, node)
        if parent is not None and len(parent) > 1:
            out.append(Mutation(rel, qualname, "drop_branch", f"dropped the `if` at line {node.lineno} and its body",
                                node.lineno, src.line_start(node.lineno), src.line_end(node.end_lineno), ""))
    return out


def _parent_block(func: ast.AST, target: ast.AST) -> list | None:
    for node in [func, *_own_nodes(func)]:
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and any(s is target for s in block):
                return block
        for handler in getattr(node, "handlers", []) or []:
            if any(s is target for s in handler.body):
                return handler.body
    return None


def _body_mutation(rel: str, qualname: str, func: ast.AST, src: _Source) -> Mutation | None:
    """The body after the docstring replaced by `return None` (same indentation)."""
    doc = _docstring_len(func)
    rest = func.body[doc:]
    if not rest:
        return None
    if len(rest) == 1 and isinstance(rest[0], ast.Return) and isinstance(rest[0].value, ast.Constant) \
            and rest[0].value.value is None:
        return None
    first = rest[0]
    if doc and first.lineno == func.body[0].end_lineno:
        return None
    start_line = first.lineno
    # decorators or comments directly above the first statement belong to it
    while start_line > (func.body[doc - 1].end_lineno + 1 if doc else func.body[0].lineno) and \
            src.lines[start_line - 2].strip().startswith(("#", "@")):
        start_line -= 1
    indent = src.indent(first.lineno)
    end_line = func.end_lineno
    newline = "\n" if src.lines[end_line - 1].endswith("\n") else ""
    return Mutation(rel, qualname, "remove_body", "body replaced by `return None`", start_line,
                    src.line_start(start_line), src.line_end(end_line), f"{indent}return None{newline}")


def check_mutant(text: str, mutation: Mutation) -> str | None:
    """The mutant's text when it is valid Python and changes what it says it changes; else None."""
    mutant = mutation.apply(text)
    try:
        new_tree = ast.parse(mutant)
    except SyntaxError:
        return None
    old_tree = ast.parse(text)
    if _same_tree(old_tree, new_tree):
        return None
    if mutation.kind == "compare":
        # exactly one operator differs: flip it back in the new tree and compare
        for node in ast.walk(new_tree):
            if isinstance(node, ast.Compare) and node.lineno <= mutation.line <= node.end_lineno:
                for i, op in enumerate(node.ops):
                    back = _FLIP.get(type(op))
                    if back is None:
                        continue
                    node.ops[i] = back[0]()
                    if _same_tree(old_tree, new_tree):
                        return mutant
                    node.ops[i] = op
        return None
    return mutant


def plan_mutations(files: dict[str, str], seed: int) -> dict[str, list[Mutation]]:
    """Per kind, every candidate across `files`, shuffled by `seed` (the same seed, the same order)."""
    rng = random.Random(seed)
    by_kind: dict[str, list[Mutation]] = {kind: [] for kind in KINDS}
    for rel in sorted(files):
        for mutation in find_mutations(rel, files[rel]):
            by_kind[mutation.kind].append(mutation)
    for kind in KINDS:
        rng.shuffle(by_kind[kind])
    return by_kind


# == running tests ================================================================================

@dataclass
class TestRun:
    passed: bool
    exit_code: int
    output: str
    failed: list[str] = field(default_factory=list)
    timed_out: bool = False
    seconds: float = 0.0


def test_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    env.pop("PYTHONPATH", None)
    return env


def run_pytest(repo: Path, pin_args: tuple[str, ...], targets: list[str], timeout: float = TEST_RUN_TIMEOUT,
               extra: tuple[str, ...] = ("--tb=short",)) -> TestRun:
    command = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *extra, *pin_args, *targets]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=repo, env=test_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return TestRun(False, -1, out, timed_out=True, seconds=time.monotonic() - started)
    output = done.stdout + done.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+?)(?: - .*)?$", output, re.M)
    return TestRun(done.returncode == 0, done.returncode, output, list(dict.fromkeys(failed)),
                   seconds=time.monotonic() - started)


def run_shell(command: str, repo: Path, timeout: float = TEST_RUN_TIMEOUT) -> TestRun:
    started = time.monotonic()
    try:
        done = subprocess.run(command, shell=True, cwd=repo, env=test_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return TestRun(False, -1, "", timed_out=True, seconds=time.monotonic() - started)
    return TestRun(done.returncode == 0, done.returncode, done.stdout + done.stderr,
                   seconds=time.monotonic() - started)


def git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=check,
                          env={**os.environ, **_GIT_ENV})
    return done.stdout


def make_git_repo(tree: Path, message: str) -> None:
    ignore = tree / ".gitignore"
    ignore.write_text((ignore.read_text() if ignore.exists() else "") + GITIGNORE)
    git(tree, "init", "-q", "-b", "main")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", message)


# == tasks ========================================================================================

def test_function_node(node: str) -> str:
    """`file.py::Class::test[param]` -> `file.py::Class::test` (all of that test's parameters)."""
    return re.sub(r"\[.*\]$", "", node)


def failure_excerpt(output: str, node: str) -> tuple[list[str], list[str]]:
    """(the test's source lines shown by --tb=short, the `E` lines) of `node`'s first failure."""
    name = node.split("::")[-1]
    blocks = re.split(r"^_{3,} (.+?) _{3,}$", output, flags=re.M)
    for title, body in zip(blocks[1::2], blocks[2::2]):
        if title.split(".")[-1].startswith(name.split("[")[0]) or title.endswith(name):
            source, errors = [], []
            for line in body.splitlines():
                if line.startswith("E "):
                    errors.append(line[1:].strip())
                elif line.startswith("    ") and not errors:
                    source.append(line.strip())
                elif re.match(r"^\S+\.py:\d+: ", line):
                    source = []  # keep only the innermost frame's lines
                    if errors:
                        break
            return source, [e for e in errors if e]
    return [], []


def report_title(test: str, source: list[str], errors: list[str]) -> str:
    """A bug report's title from a failing assertion: "ordinal(13) returns 'rd', expected 'th'" when
    pytest says which call gave the value, else "test_x fails: <the assertion error>"."""
    short = test.split("::")[-1]
    head = errors[0] if errors else (source[-1] if source else "fails")
    head = re.sub(r"^AssertionError: ", "", head)
    where = next((re.match(r"\+\s+where (.+?) = <(?:function|bound method) ([\w.]+)(?: of .+?)?(?: at 0x[0-9a-f]+)?>\((.*)\)$",
                           e) for e in errors if "where" in e), None)
    compare = re.match(r"assert (.+) == (.+)$", head)
    if where and compare and where.group(1) == compare.group(1):
        call = f"{where.group(2).split('.')[-1]}({where.group(3)})"
        return _clip(f"{call} returns {where.group(1)}, expected {compare.group(2)}", 120)
    if re.match(r"^[A-Z]\w*(Error|Exception)\b", head) and not head.startswith("AssertionError"):
        return _clip(f"{short} raises {head}", 120)
    return _clip(f"{short} fails: {head}", 120)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def task_entry(task_id: str, kind: str, pin: Pin, mutation: Mutation, node: str, excerpt) -> dict:
    command = pin.pytest(test_function_node(node))
    source, errors = ([re.sub(r" at 0x[0-9a-f]+>", ">", line) for line in part] for part in excerpt)
    if kind == "named":
        return {"id": task_id, "title": f"Fix {mutation.function} in {mutation.file}",
                "description": f"`{command}` fails: {mutation.function} in {mutation.file} does not do what "
                               f"its docstring and tests say. Fix the code, not the tests.",
                "kind": "code", "inputs": [mutation.file], "tests": [command]}
    lines = [f"Running `{command}` fails:", "", "```", *source[-6:], *errors[:20], "```", "",
             "It should pass. Fix the library code, not the test."]
    return {"id": task_id, "title": report_title(node, source, errors), "description": "\n".join(lines),
            "kind": "code", "inputs": [], "tests": [command]}


# == generate =====================================================================================

def generate(out: Path, seed: int = 0, count: int = 24, pins: list[Pin] | None = None, cache: Path = CACHE,
             max_tries: int = 400, log=print) -> dict:
    pins = load_pins() if pins is None else pins
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="real-repos-", dir=cache if cache.exists() else None))
    projects = []
    try:
        for pin in pins:
            sdist = fetch_sdist(pin, cache)
            tree = unpack(pin, sdist, work / pin.name)
            suite = run_pytest(tree, pin.pytest_args, [pin.tests], timeout=600)
            if not suite.passed:
                raise SystemExit(f"{pin.label}: the test suite fails on the original sdist:\n{suite.output[-3000:]}")
            files = {rel: (tree / rel).read_text(encoding="utf-8") for rel in source_files(tree, pin)}
            plan = plan_mutations(files, seed)
            log(f"{pin.label}: suite passes ({suite.output.strip().splitlines()[-1]}); candidates: "
                + ", ".join(f"{k} {len(v)}" for k, v in plan.items()))
            projects.append((pin, tree, files, plan, max(30.0, 4 * suite.seconds)))
        stats = {pin.label: {kind: {"kept": 0, "rejected": 0, "reasons": {}} for kind in KINDS}
                 for pin, *_ in projects}
        slots = [(p, k) for k in KINDS for p in range(len(projects))]
        order = [slots[i % len(slots)] for i in range(len(slots) * count)]  # round robin over (project, kind)
        tasks, used, tries = [], set(), 0
        for project_index, kind in order:
            if len(tasks) >= count or tries >= max_tries:
                break
            pin, tree, files, plan, limit = projects[project_index]
            while plan[kind] and tries < max_tries:
                mutation = plan[kind].pop()
                if (mutation.file, mutation.function) in used:
                    continue
                tries += 1
                verdict = _try_mutation(pin, tree, files, mutation, limit)
                entry = stats[pin.label][kind]
                if isinstance(verdict, str):
                    entry["rejected"] += 1
                    entry["reasons"][verdict] = entry["reasons"].get(verdict, 0) + 1
                    continue
                entry["kept"] += 1
                used.add((mutation.file, mutation.function))
                number = len(tasks)
                task_kind = "named" if number % 2 == 0 else "report"
                task_id = f"{pin.name}-{number:02d}-{kind.replace('_', '-')}"
                tasks.append(_write_task(out, task_id, task_kind, pin, tree, files, mutation, *verdict))
                log(f"  kept {task_id} ({task_kind}): {mutation.file}:{mutation.line} {mutation.function} "
                    f"{mutation.detail}; {len(verdict[0])} failing test(s)")
                break
        manifest = {"seed": seed, "count": count, "generated": date.today().isoformat(),
                    "pins": [asdict(p) for p in pins], "tasks": tasks, "stats": stats, "tries": tries}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _try_mutation(pin: Pin, tree: Path, files: dict[str, str], mutation: Mutation, limit: float = TEST_RUN_TIMEOUT):
    """(failing node ids, excerpt of the first) when some test of the module fails on the mutant;
    else the reason it is rejected. The tree is restored either way."""
    original = files[mutation.file]
    mutant = check_mutant(original, mutation)
    if mutant is None:
        return "invalid or no-op"
    path = tree / mutation.file
    path.write_text(mutant, encoding="utf-8")
    try:
        result = run_pytest(tree, pin.pytest_args, tests_for(mutation.file, tree, pin), timeout=limit)
        if result.timed_out:
            return "tests time out"
        if result.passed:
            return "survived (no test fails)"
        failing = [n for n in result.failed if "::" in n]
        if not failing:
            return "tests error without a failing test id"
        node = test_function_node(failing[0])
        detail = run_pytest(tree, pin.pytest_args, [node], timeout=limit, extra=("--tb=short", "-vv"))
        if detail.passed:
            return "flaky (passes alone)"
        return failing, failure_excerpt(detail.output, detail.failed[0] if detail.failed else node)
    finally:
        path.write_text(original, encoding="utf-8")


def _write_task(out: Path, task_id: str, task_kind: str, pin: Pin, tree: Path, files: dict[str, str],
                mutation: Mutation, failing: list[str], excerpt) -> dict:
    folder = out / task_id
    if folder.exists():
        shutil.rmtree(folder)
    repo = folder / "repo"
    shutil.copytree(tree, repo)
    (repo / mutation.file).write_text(mutation.apply(files[mutation.file]), encoding="utf-8")
    make_git_repo(repo, f"{pin.name} {pin.version}")
    entry = task_entry(task_id, task_kind, pin, mutation, failing[0], excerpt)
    (folder / "task.json").write_text(json.dumps(entry, indent=2) + "\n")
    original = files[mutation.file]
    fix = {"file": mutation.file, "original_sha256": hashlib.sha256(original.encode()).hexdigest(),
           "mutation": asdict(mutation), "mutant_span": [mutation.start, mutation.start + len(mutation.replacement)],
           "original_text": original[mutation.start:mutation.end]}
    (folder / "fix.json").write_text(json.dumps(fix, indent=2) + "\n")
    whole = sorted({n.split("::")[0] for n in failing})
    return {"id": task_id, "project": pin.name, "version": pin.version, "file": mutation.file,
            "function": mutation.function, "mutation": mutation.kind, "detail": mutation.detail,
            "line": mutation.line, "kind": task_kind, "failing_tests": failing, "test_files": whole,
            "tests": entry["tests"], "whole_file_command": pin.pytest(*whole), "pytest_args": list(pin.pytest_args)}


def restore_original(repo: Path, fix: dict) -> None:
    path = repo / fix["file"]
    text = path.read_text(encoding="utf-8")
    start, end = fix["mutant_span"]
    path.write_text(text[:start] + fix["original_text"] + text[end:], encoding="utf-8")


def verify(suite: Path, log=print) -> list[str]:
    """Every task: its tests fail at HEAD and pass, with their whole test files, on the original file."""
    manifest = json.loads((suite / "manifest.json").read_text())
    problems = []
    for task in manifest["tasks"]:
        folder = suite / task["id"]
        fix = json.loads((folder / "fix.json").read_text())
        with tempfile.TemporaryDirectory() as scratch:
            repo = Path(scratch) / "repo"
            shutil.copytree(folder / "repo", repo)
            before = [run_shell(c, repo) for c in task["tests"]]
            restore_original(repo, fix)
            ok_sha = hashlib.sha256((repo / fix["file"]).read_bytes()).hexdigest() == fix["original_sha256"]
            after = [run_shell(c, repo) for c in [*task["tests"], task["whole_file_command"]]]
        fails_before = all(not r.passed for r in before)
        passes_after = all(r.passed for r in after)
        status = "ok" if fails_before and passes_after and ok_sha else "BAD"
        if status != "ok":
            problems.append(task["id"])
        log(f"{status:3s} {task['id']:36s} fails on the mutant: {fails_before}; passes on the original "
            f"(task tests + whole files): {passes_after}; original restored byte for byte: {ok_sha}")
    return problems


# == run (our engine) =============================================================================

class CountingLLM:
    """Wraps an LLM client: remembers each call's prompt tokens and the prompt itself."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[dict] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def complete(self, messages, **kwargs):
        completion = self.inner.complete(messages, **kwargs)
        tokens = completion.prompt_tokens
        if tokens is None:
            tokens = sum(self.inner.count_tokens(m.get("content", "")) for m in messages)
        self.calls.append({"prompt_tokens": tokens, "completion_tokens": completion.completion_tokens,
                           "seconds": completion.seconds,
                           "prompt": "\n".join(m.get("content", "") for m in messages)})
        return completion

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


class OracleLLM:
    """A scripted model: answers the injected change reversed, as one SEARCH/REPLACE block."""

    model = "oracle"
    context_window = 32768

    def __init__(self):
        self.fix: dict | None = None
        self.repo: Path | None = None

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def complete(self, messages, **kwargs):
        from auto_gvpie.llm.base import Completion

        text = (self.repo / self.fix["file"]).read_text(encoding="utf-8")
        start, end = self.fix["mutant_span"]
        lines = text.splitlines(keepends=True)
        first = text.count("\n", 0, start)
        last = text.count("\n", 0, max(start, end - 1)) if end > start else first
        while True:  # widen the context until the SEARCH text occurs once
            a, b = max(0, first - 1), min(len(lines), last + 2)
            search = "".join(lines[a:b])
            if text.count(search) == 1 or (a == 0 and b == len(lines)):
                break
            first, last = first - 1, last + 1
        prefix = "".join(lines[:a])
        fixed = text[:start] + self.fix["original_text"] + text[end:]
        replace = fixed[len(prefix):len(fixed) - (len(text) - len(prefix) - len(search))]
        answer = (f"{self.fix['file']}\n```python\n<<<<<<< SEARCH\n{search.rstrip(chr(10))}\n=======\n"
                  f"{replace.rstrip(chr(10))}\n>>>>>>> REPLACE\n```\n")
        return Completion(answer, "stop", "oracle", sum(self.count_tokens(m.get("content", "")) for m in messages),
                          self.count_tokens(answer), 0.0, None)


def judge(repo: Path, task: dict, injected: str) -> dict:
    """The solved rule: the task's tests and the whole files of its failing tests pass, and no test
    file changed (git diff of the checkout against HEAD, untracked files included)."""
    git(repo, "add", "-A", "--intent-to-add", check=False)
    changed = [line for line in git(repo, "diff", "--name-only", "HEAD").splitlines() if line]
    test_changed = [p for p in changed if is_test_path(p)]
    tests = [run_shell(c, repo) for c in task["tests"]]
    whole = run_shell(task["whole_file_command"], repo)
    return {"changed_files": changed, "test_files_changed": test_changed,
            "tests_pass": all(t.passed for t in tests), "whole_files_pass": whole.passed,
            "edited_injected": injected in changed,
            "solved": all(t.passed for t in tests) and whole.passed and not test_changed}


def _localisation_from_attempts(artifacts: Path, task_id: str) -> list[str] | None:
    for path in sorted(artifacts.glob(f"{task_id}.attempt-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in ("localisation", "localization", "ranking", "localized"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("files") or value.get("ranking")
            if isinstance(value, list) and value:
                files = [v if isinstance(v, str) else (v.get("path") or v.get("file")) for v in value]
                return [f for f in files if f]
    return None


def _files_in_prompt(prompt: str, repo: Path) -> list[str]:
    """The repository's non-test source files the prompt shows as files to change, in the order shown
    (its "## Files to change" section; the test output elsewhere in it names files the engine did not pick)."""
    section = re.search(r"^## Files to change.*?(?=^## |\Z)", prompt, re.S | re.M)
    if section is None:
        return []
    prompt = section.group(0)
    tracked = [p for p in git(repo, "ls-files").splitlines() if p.endswith(".py") and not is_test_path(p)]
    positions = []
    for rel in tracked:
        match = re.search(rf"(?<![\w/.]){re.escape(rel)}(?![\w/])", prompt)
        if match:
            positions.append((match.start(), rel))
    return [rel for _, rel in sorted(positions)]


def localisation_scores(ranking: list[str], injected: str) -> tuple[bool, bool]:
    return (ranking[:1] == [injected], injected in ranking[:3])


def _open_llm(spec: str, home: Path):
    sys.path[:0] = [str(ROOT)]
    from auto_gvpie.config import load_settings
    from auto_gvpie.llm import open_llm

    if spec == "oracle":
        return OracleLLM()
    cli = {"home": str(home), "llm": "embedded"} if spec == "embedded" else {"home": str(home), "llm": "http",
                                                                            "llm_url": spec}
    return open_llm(load_settings(cli))


def run_suite(suite: Path, config: str, llm_spec: str = "embedded", samples: int = 1, memory: bool = True,
              max_attempts: int = 3, limit: int | None = None, only: list[str] | None = None,
              workdir: Path | None = None, log=print, results_path: Path | None = None) -> dict:
    """Runs the engine on each task; with `results_path`, the results so far are written there after
    every task (a run cut short still leaves its numbers)."""
    sys.path[:0] = [str(ROOT)]
    from auto_gvpie.config import Settings, load_settings
    from auto_gvpie.engine import Engine
    from auto_gvpie.inbox import parse_inbox
    from auto_gvpie.memory import Memory
    from auto_gvpie.state import StateStore

    os.environ["PATH"] = test_env()["PATH"]  # `python` in the task's commands is this interpreter
    manifest = json.loads((suite / "manifest.json").read_text())
    tasks = [t for t in manifest["tasks"] if not only or t["id"] in only][:limit]
    has_samples = "samples" in {f for f in Settings.__dataclass_fields__}
    if samples != 1 and not has_samples:
        raise SystemExit("this engine has no `samples` setting: run with --samples 1")
    scratch = Path(workdir or tempfile.mkdtemp(prefix=f"real-repos-{config}-"))
    home = scratch / "home"
    home.mkdir(parents=True, exist_ok=True)
    inner = _open_llm(llm_spec, home)
    llm = CountingLLM(inner)
    store_memory = Memory(home, enabled=memory)
    header = {"engine": "auto-gvpie", "config": config, "llm": llm_spec, "model": getattr(inner, "model", "?"),
              "samples": samples, "memory": memory, "max_attempts": max_attempts, "suite": str(suite),
              "date": date.today().isoformat(), "machine": _machine(),
              "command": " ".join(["bench/real_repos.py", *sys.argv[1:]]), "planned": len(tasks)}
    results = []
    for task in tasks:
        folder = suite / task["id"]
        entry = json.loads((folder / "task.json").read_text())
        entry["max_attempts"] = max_attempts
        repo = scratch / "repos" / task["id"]
        if repo.exists():
            shutil.rmtree(repo)
        shutil.copytree(folder / "repo", repo)
        if isinstance(inner, OracleLLM):
            inner.fix, inner.repo = json.loads((folder / "fix.json").read_text()), repo
        (home / "auto_tasks.json").write_text(json.dumps([entry]))
        cli = {"home": str(home), "repo": str(repo), "memory": memory, "apply": "checkout", "sandbox": "off"}
        if has_samples:
            cli["samples"] = samples
        settings = load_settings(cli, env={"GVPIE_TEST_TIMEOUT": "300"})
        store = StateStore(settings.state_dir)
        (inbox_task,) = parse_inbox(json.dumps([entry]))
        store.sync([inbox_task])
        engine = Engine(settings, store, llm, store_memory, owner="bench")
        first_call = len(llm.calls)
        started = time.monotonic()
        error = None
        try:
            outcome = engine.run_task(inbox_task)
            status, attempts, error = outcome.status, outcome.attempts, outcome.error
        except Exception as exc:  # the server went away, the worktree failed: the task is not solved
            status, attempts, error = "error", 0, f"{type(exc).__name__}: {exc}"
        wall = time.monotonic() - started
        store.close()
        calls = llm.calls[first_call:]
        ranking = _localisation_from_attempts(settings.artifacts_dir, task["id"])
        source = "attempt file"
        if ranking is None and calls:
            ranking, source = _files_in_prompt(calls[0]["prompt"], repo), "prompt"
        if not ranking:
            ranking, source = list(entry.get("inputs") or []), "inputs"
        top1, top3 = localisation_scores(ranking, task["file"])
        verdict = judge(repo, task, task["file"])
        results.append({"id": task["id"], "kind": task["kind"], "project": task["project"], "file": task["file"],
                        "mutation": task["mutation"], "status": str(status), "engine_done": str(status) == "done",
                        "attempts": attempts, "error": error, "wall_s": round(wall, 2),
                        "prompt_tokens": [c["prompt_tokens"] for c in calls],
                        "completion_tokens": [c["completion_tokens"] for c in calls],
                        "localisation": ranking[:5], "localisation_source": source, "top1": top1, "top3": top3,
                        **verdict})
        log(f"  [{config}] {task['id']:36s} {'SOLVED' if verdict['solved'] else 'failed':6s} {status} "
            f"attempts={attempts} {wall:.1f}s tokens={[c['prompt_tokens'] for c in calls]} "
            f"loc={ranking[:3]} ({source})", flush=True)
        if results_path is not None:
            results_path.write_text(json.dumps(header | {"tasks": results}, indent=2) + "\n")
    store_memory.close()
    return header | {"tasks": results}


def _machine() -> str:
    sys.path[:0] = [str(ROOT / "bench")]
    from bench_report import machine

    return machine()


# == aider (the baseline) =========================================================================

def aider_binary() -> Path:
    binary = AIDER_VENV / "bin" / "aider"
    if not binary.exists():
        raise SystemExit(f"Aider is not installed at {binary}: python3.11 -m venv {AIDER_VENV} && "
                         f"{AIDER_VENV}/bin/pip install aider-chat")
    return binary


def server_model(url: str) -> str:
    with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=10) as response:
        return json.load(response)["data"][0]["id"]


def run_aider(suite: Path, url: str, limit: int | None = None, only: list[str] | None = None,
              timeout: float = 1800, workdir: Path | None = None, log=print) -> dict:
    binary = aider_binary()
    model = server_model(url)
    manifest = json.loads((suite / "manifest.json").read_text())
    tasks = [t for t in manifest["tasks"] if not only or t["id"] in only][:limit]
    scratch = Path(workdir or tempfile.mkdtemp(prefix="real-repos-aider-"))
    env = test_env()
    env.update(OPENAI_API_KEY="local", OPENAI_API_BASE=url, AIDER_ANALYTICS="false", AIDER_CHECK_UPDATE="false")
    results = []
    for task in tasks:
        folder = suite / task["id"]
        entry = json.loads((folder / "task.json").read_text())
        repo = scratch / task["id"]
        if repo.exists():
            shutil.rmtree(repo)
        shutil.copytree(folder / "repo", repo)
        message = entry["title"] + "\n\n" + entry.get("description", "")
        command = [str(binary), "--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-pretty",
                   "--no-stream", "--no-analytics", "--no-check-update", "--no-show-model-warnings",
                   "--no-fancy-input", "--model", f"openai/{model}", "--openai-api-base", url,
                   "--openai-api-key", "local", "--auto-test", "--test-cmd", " && ".join(entry["tests"]),
                   "--message", message, *entry.get("inputs", [])]
        started = time.monotonic()
        try:
            done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = str(exc.stdout or ""), -1
        wall = time.monotonic() - started
        (scratch / f"{task['id']}.aider.log").write_text(output)
        sent = [_kilo(m) for m in re.findall(r"Tokens: ([\d.]+k?) sent", output)]
        verdict = judge(repo, task, task["file"])
        ranking = [p for p in verdict["changed_files"] if not is_test_path(p) and p.endswith(".py")]
        if task["file"] in ranking:  # the order git prints is alphabetical: count the injected file first
            ranking.remove(task["file"])
            ranking.insert(0, task["file"])
        ranking = ranking or list(entry.get("inputs") or [])
        top1, top3 = localisation_scores(ranking, task["file"])
        results.append({"id": task["id"], "kind": task["kind"], "project": task["project"], "file": task["file"],
                        "mutation": task["mutation"], "status": f"exit {code}", "attempts": max(1, len(sent)),
                        "wall_s": round(wall, 2), "prompt_tokens": sent, "localisation": ranking[:5],
                        "localisation_source": "files changed", "top1": top1, "top3": top3, **verdict})
        log(f"  [aider] {task['id']:36s} {'SOLVED' if verdict['solved'] else 'failed':6s} {wall:.1f}s "
            f"tokens={sent} changed={verdict['changed_files']}", flush=True)
    return {"engine": "aider", "config": "aider", "llm": url, "model": model, "samples": 1, "memory": False,
            "suite": str(suite), "date": date.today().isoformat(), "machine": _machine(),
            "command": " ".join(["bench/real_repos.py", *sys.argv[1:]]), "tasks": results}


def _kilo(text: str) -> int:
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(float(text))


# == report =======================================================================================

def summarise(result: dict) -> dict:
    tasks = result["tasks"]
    named = [t for t in tasks if t["kind"] == "named"]
    report = [t for t in tasks if t["kind"] == "report"]
    solved = [t for t in tasks if t["solved"]]
    per_attempt = [n for t in tasks for n in t["prompt_tokens"] if n]
    return {
        "named": f"{sum(t['solved'] for t in named)}/{len(named)}",
        "report": f"{sum(t['solved'] for t in report)}/{len(report)}",
        "all": f"{len(solved)}/{len(tasks)}",
        "top1": f"{sum(t['top1'] for t in tasks)}/{len(tasks)}", "top3": f"{sum(t['top3'] for t in tasks)}/{len(tasks)}",
        "report_top1": f"{sum(t['top1'] for t in report)}/{len(report)}",
        "wall": statistics.median(t["wall_s"] for t in tasks) if tasks else float("nan"),
        "wall_solved": statistics.median(t["wall_s"] for t in solved) if solved else float("nan"),
        "tokens": statistics.median(per_attempt) if per_attempt else float("nan"),
        "attempts": sum(max(1, len(t["prompt_tokens"])) for t in tasks),
    }


def describe(result: dict) -> str:
    if result["engine"] == "aider":
        return f"Aider (same model, {result['model']})"
    llm = {"embedded": "bundled model in-process", "oracle": "oracle (scripted fix: harness check)"}.get(
        result["llm"], f"server {result['llm']}")
    return (f"`{result['config']}`: Auto-GVPIE, {llm}, samples {result['samples']}, memory "
            f"{'on' if result['memory'] else 'off'}, max_attempts {result.get('max_attempts', 3)}")


def _num(value: float, digits: int) -> str:
    return "—" if value != value else f"{value:.{digits}f}"


def report(paths: list[Path], write: bool = True, note: str = "") -> str:
    results = [json.loads(p.read_text()) for p in paths]
    manifest = {}
    suite = Path(results[0]["suite"]) if results else None
    if suite and (suite / "manifest.json").exists():
        manifest = json.loads((suite / "manifest.json").read_text())
    rows = []
    for result in results:
        s = summarise(result)
        planned = result.get("planned", len(result["tasks"]))
        partial = f" — partial: {len(result['tasks'])} of {planned} planned tasks" if len(result["tasks"]) < planned else ""
        rows.append(f"| {describe(result)}{partial} | {s['named']} | {s['report']} | {s['all']} | {s['top1']} "
                    f"(report tasks {s['report_top1']}) | {s['top3']} | {_num(s['wall'], 1)} | {_num(s['wall_solved'], 1)} | "
                    f"{_num(s['tokens'], 0)} ({s['attempts']} calls) |")
    kept = ""
    if manifest:
        counts = ", ".join(f"{label}: " + ", ".join(f"{k} {v['kept']} kept/{v['rejected']} rejected"
                                                    for k, v in per.items())
                           for label, per in manifest["stats"].items())
        pins = ", ".join(f"{p['name']} {p['version']}" for p in manifest["pins"])
        kept = (f"Suite: {len(manifest['tasks'])} tasks (seed {manifest['seed']}) from the pinned sdists {pins} "
                f"(`bench/real_repos_pins.toml`, SHA-256 checked); half name the file in `inputs`, half give only a "
                f"bug report and a test command. Each task's tests fail on the mutant and pass, with their whole test "
                f"files, on the original (`bench/real_repos.py verify`). Mutants per project and kind: {counts}. "
                f"Built with `.venv/bin/python bench/real_repos.py generate --out ~/.cache/auto-gvpie/bench/suite "
                f"--seed {manifest['seed']} --count {manifest['count']}`.")
    body = "\n".join([
        f"Machine: {results[0]['machine'] if results else '?'}; {results[0]['date'] if results else ''}.",
        "Commands: " + "; ".join(f"`.venv/bin/python {r['command']}`".replace(str(Path.home()), "~") for r in results) + ".",
        "",
        kept,
        "",
        "Solved: the task's tests and the whole test files of its failing tests pass in the checkout after "
        "the patch is applied, and no test file changed. Localisation: the injected file ranked first / in the "
        "first three (Auto-GVPIE: the ranking in its attempt files, else the repository files in the first "
        "prompt in order, else the inputs; Aider: the files it changed).",
        "",
        "| configuration | solved named | solved report | solved all | localisation top-1 | top-3 | "
        "median wall s per task | median wall s per solved task | median prompt tokens per attempt |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        *(["", note] if note else []),
    ])
    if write:
        sys.path[:0] = [str(ROOT / "bench")]
        from bench_report import write_section

        write_section("real_repos", "Real repositories: injected bugs in released projects (issue 11)", body)
    return body


# == command line =================================================================================

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="build the suite")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--count", type=int, default=24)
    g.add_argument("--only", nargs="*", help="project names (default: every pin)")
    v = sub.add_parser("verify", help="check every task fails on the mutant and passes on the original")
    v.add_argument("--suite", type=Path, required=True)
    r = sub.add_parser("run", help="run Auto-GVPIE on the suite")
    r.add_argument("--suite", type=Path, required=True)
    r.add_argument("--config", required=True, help="a name for this configuration (in the results and the report)")
    r.add_argument("--llm", default="embedded", help="embedded | oracle | an OpenAI-compatible URL")
    r.add_argument("--samples", type=int, default=1)
    r.add_argument("--no-memory", action="store_true")
    r.add_argument("--max-attempts", type=int, default=3)
    r.add_argument("--limit", type=int)
    r.add_argument("--only", nargs="*")
    r.add_argument("--keep", type=Path, help="keep homes and checkouts here")
    r.add_argument("--results", type=Path, help="results JSON (default: results-<config>.json beside the suite)")
    a = sub.add_parser("aider", help="run the Aider baseline on the suite")
    a.add_argument("--suite", type=Path, required=True)
    a.add_argument("--url", required=True)
    a.add_argument("--limit", type=int)
    a.add_argument("--only", nargs="*")
    a.add_argument("--keep", type=Path)
    a.add_argument("--results", type=Path)
    p = sub.add_parser("report", help="write the real_repos section of docs/BENCHMARKS.md")
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--print-only", action="store_true")
    p.add_argument("--note", default="", help="a paragraph under the table (what was run, what was not)")
    args = parser.parse_args(argv)
    if args.command == "generate":
        pins = [p for p in load_pins() if not args.only or p.name in args.only]
        manifest = generate(args.out.expanduser(), args.seed, args.count, pins)
        print(f"{len(manifest['tasks'])} tasks in {args.out} ({manifest['tries']} mutants tried)")
        print(json.dumps(manifest["stats"], indent=1))
        return 0 if len(manifest["tasks"]) >= args.count else 1
    if args.command == "verify":
        return 1 if verify(args.suite.expanduser()) else 0
    if args.command in ("run", "aider"):
        suite = args.suite.expanduser()
        if args.command == "run":
            out = args.results or suite.parent / f"results-{args.config}.json"
            result = run_suite(suite, args.config, args.llm, args.samples, not args.no_memory, args.max_attempts,
                               args.limit, args.only, args.keep, results_path=out)
        else:
            result = run_aider(suite, args.url, args.limit, args.only, workdir=args.keep)
            out = args.results or suite.parent / f"results-{result['config']}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        s = summarise(result)
        print(f"{describe(result)}: solved {s['all']} (named {s['named']}, report {s['report']}), "
              f"top-1 {s['top1']}, top-3 {s['top3']}, median wall {s['wall']:.1f} s -> {out}")
        return 0
    print(report(args.results, write=not args.print_only, note=args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
