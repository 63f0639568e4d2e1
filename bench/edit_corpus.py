"""Edit corpus benchmark: the share of realistic model answers handled correctly.

Every case under tests/edit_corpus/ is a small repository (`before/`), a model
answer (`answer.txt`) and the expected outcome: the tree after applying
(`after/`) or a refusal with the words it must contain (`case.json`). A case is
handled correctly when the outcome matches and nothing outside the repository
or in `.git/` changed. As a baseline, `git apply` is run on the same answers
in the same run, for the cases whose answer is a unified diff.

Usage: python bench/edit_corpus.py [--repeat N] [--no-write]
Writes the "Edit corpus" section of docs/BENCHMARKS.md. The test suite imports
`load_cases` and `run_case` from here so that tests and benchmark judge alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from auto_gvpie.edits import EditRefused, apply_answer  # noqa: E402
from bench_report import write_section  # noqa: E402

CORPUS = ROOT / "tests" / "edit_corpus"
CATEGORIES = ("good", "sloppy", "slip", "hostile")
_DIFF = re.compile(r"^(@@|--- .*\n\+\+\+ )", re.MULTILINE)


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    category: str
    description: str
    fmt: str
    input_files: tuple[str, ...]
    expect: str
    files: tuple[str, ...] | None
    notes: tuple[str, ...]
    refusal: tuple[str, ...]
    symlinks: dict[str, str]
    outside: dict[str, str]

    @property
    def answer(self) -> bytes:
        return (self.path / "answer.txt").read_bytes()


@dataclass
class CaseResult:
    case: Case
    outcome: str  # "applied" | "refused" | "crashed"
    correct: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


class CorpusError(Exception):
    """A case directory is malformed."""


def load_cases(corpus: Path = CORPUS) -> list[Case]:
    cases = []
    for directory in sorted(p for p in corpus.iterdir() if p.is_dir()):
        meta_path = directory / "case.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CorpusError(f"{meta_path}: {error}") from error
        if meta.get("category") not in CATEGORIES:
            raise CorpusError(f"{meta_path}: category: must be one of {', '.join(CATEGORIES)}")
        if meta.get("expect") not in ("applied", "refused"):
            raise CorpusError(f"{meta_path}: expect: must be 'applied' or 'refused'")
        if meta["expect"] == "applied" and not (directory / "after").is_dir():
            raise CorpusError(f"{directory}: expect is 'applied' but there is no after/ directory")
        cases.append(Case(
            name=directory.name, path=directory, category=meta["category"],
            description=meta.get("description", ""), fmt=meta.get("format", "auto"),
            input_files=tuple(meta.get("input_files", ())), expect=meta["expect"],
            files=tuple(meta["files"]) if "files" in meta else None,
            notes=tuple(meta.get("notes", ())), refusal=tuple(meta.get("refusal", ())),
            symlinks=dict(meta.get("symlinks", {})),
            outside=dict(meta.get("outside", {"secret.txt": "do not touch\n"}))))
    return cases


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every file and symlink under root (symlinks not followed), with content or target."""
    found: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_file():
                found[rel] = ("file", path.read_bytes())
    return found


def prepare(case: Case, workdir: Path) -> Path:
    """A real git repository holding the case's starting files, plus a directory outside it."""
    repo, outside = workdir / "repo", workdir / "outside"
    shutil.copytree(case.path / "before", repo, symlinks=True)
    outside.mkdir()
    for rel, content in case.outside.items():
        (outside / rel).write_text(content)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for rel, target in case.symlinks.items():
        link = repo / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.replace("{outside}", str(outside)))
    return repo


def _expected_tree(case: Case, repo: Path) -> dict[str, tuple[str, bytes | str]]:
    tree = snapshot(case.path / "after")
    for rel, target in case.symlinks.items():
        tree[rel] = ("link", target.replace("{outside}", str(repo.parent / "outside")))
    return tree


def _compare(expected: dict, actual: dict, where: str) -> list[str]:
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"{where}: {rel} missing")
        elif rel not in expected:
            problems.append(f"{where}: unexpected {rel}")
        elif expected[rel] != actual[rel]:
            problems.append(f"{where}: {rel} differs: expected {expected[rel][1]!r}, got {actual[rel][1]!r}")
    return problems


def run_case(case: Case, workdir: Path) -> CaseResult:
    repo = prepare(case, workdir)
    before = snapshot(workdir)
    text = case.answer.decode("utf-8")
    started = time.perf_counter()
    try:
        applied = apply_answer(repo, text, case.fmt, case.input_files)
    except EditRefused as refused:
        seconds = time.perf_counter() - started
        problems = _compare(before, snapshot(workdir), "after a refusal")
        message = str(refused)
        if case.expect == "applied":
            problems.append(f"refused: {message}")
        problems += [f"refusal lacks {word!r}: {message}" for word in case.refusal if word not in message]
        return CaseResult(case, "refused", not problems, problems, seconds)
    except Exception as error:  # noqa: BLE001 - a crash is a result to report, not to hide
        return CaseResult(case, "crashed", False, [f"{type(error).__name__}: {error}"],
                          time.perf_counter() - started)
    seconds = time.perf_counter() - started
    after = snapshot(workdir)
    problems = []
    if case.expect == "refused":
        problems.append(f"applied {applied.files} but a refusal was expected")
    else:
        repo_tree = {k[len("repo/"):]: v for k, v in after.items()
                     if k.startswith("repo/") and not k.startswith("repo/.git/") and k != "repo/.git"}
        problems += _compare(_expected_tree(case, repo), repo_tree, "repository")
        if case.files is not None and list(case.files) != applied.files:
            problems.append(f"Applied.files is {applied.files}, expected {list(case.files)}")
        joined = "\n".join(applied.notes)
        problems += [f"notes lack {word!r}: {applied.notes}" for word in case.notes if word not in joined]
    untouchable = {k: v for k, v in before.items() if not k.startswith("repo/") or k.startswith("repo/.git/")}
    problems += _compare(untouchable,
                         {k: v for k, v in after.items() if not k.startswith("repo/") or k.startswith("repo/.git/")},
                         ".git/ and outside")
    return CaseResult(case, "applied", not problems, problems, seconds)


def run_git_apply(case: Case, workdir: Path) -> CaseResult:
    """The baseline: `git apply --recount` on the raw answer, judged like ours."""
    repo = prepare(case, workdir)
    before = snapshot(workdir)
    started = time.perf_counter()
    done = subprocess.run(["git", "apply", "--recount", "--whitespace=nowarn", "-"], cwd=repo,
                          input=case.answer, capture_output=True)
    seconds = time.perf_counter() - started
    after = snapshot(workdir)
    if done.returncode != 0:
        correct = case.expect == "refused" and after == before
        return CaseResult(case, "refused", correct, [done.stderr.decode(errors="replace").strip()], seconds)
    if case.expect == "refused":
        return CaseResult(case, "applied", False, ["applied but a refusal was expected"], seconds)
    repo_tree = {k[len("repo/"):]: v for k, v in after.items()
                 if k.startswith("repo/") and not k.startswith("repo/.git/")}
    problems = _compare(_expected_tree(case, repo), repo_tree, "repository")
    return CaseResult(case, "applied", not problems, problems, seconds)


def is_diff_case(case: Case) -> bool:
    return case.fmt in ("auto", "udiff") and _DIFF.search(case.answer.decode("utf-8").replace("\r\n", "\n")) is not None


def _measure(cases: list[Case], runner, repeat: int, label: str) -> dict[str, list[CaseResult]]:
    results: dict[str, list[CaseResult]] = {case.name: [] for case in cases}
    total = len(cases) * repeat
    done = 0
    for _ in range(repeat):
        for case in cases:
            with tempfile.TemporaryDirectory(prefix="gvpie-corpus-") as tmp:
                results[case.name].append(runner(case, Path(tmp)))
            done += 1
            print(f"\r{label}: {done}/{total} {case.name:<40}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return results


def _share(results: list[CaseResult]) -> str:
    good = sum(r.correct for r in results)
    return f"{good}/{len(results)} ({100 * good / len(results):.0f}%)" if results else "-"


def report(cases: list[Case], ours: dict[str, list[CaseResult]], base: dict[str, list[CaseResult]],
           repeat: int, command: str) -> str:
    first = {name: runs[0] for name, runs in ours.items()}
    rows = []
    for category in CATEGORIES:
        members = [first[c.name] for c in cases if c.category == category]
        applied = [r for r in members if r.case.expect == "applied"]
        refused = [r for r in members if r.case.expect == "refused"]
        rows.append(f"| {category} | {len(members)} | {_share(applied)} | {_share(refused)} | {_share(members)} |")
    every = list(first.values())
    rows.append(f"| **all** | {len(every)} | {_share([r for r in every if r.case.expect == 'applied'])} | "
                f"{_share([r for r in every if r.case.expect == 'refused'])} | **{_share(every)}** |")
    diff_names = list(base)
    ours_diff = [first[n] for n in diff_names]
    base_first = [base[n][0] for n in diff_names]
    ours_time = statistics.median(statistics.median(r.seconds for r in ours[n]) for n in diff_names)
    base_time = statistics.median(statistics.median(r.seconds for r in base[n]) for n in diff_names)
    all_time = statistics.median(statistics.median(r.seconds for r in runs) for runs in ours.values())
    wrong = [r for r in every if not r.correct]
    misses = "\n".join(f"- `{r.case.name}` ({r.case.category}, {r.outcome}): {r.problems[0]}" for r in wrong) \
        or "- none"
    base_misses = ", ".join(f"`{r.case.name}`" for r in base_first if not r.correct) or "none"
    return f"""How many realistic model answers `auto_gvpie.edits.apply_answer` handles correctly: applied with
exactly the expected result, or refused with the expected explanation, and in every case nothing
written outside the repository or into `.git/`. Cases live in `tests/edit_corpus/` (one directory
each: `before/`, `answer.txt`, `after/` or the expected refusal in `case.json`); categories:
*good* (well-formed answers), *sloppy* (whitespace, CRLF, indentation, fences, line numbers),
*slip* (the small-model slips of issue 7: invented paths, swapped or made-up SEARCH text, no-op
and edit-less answers), *hostile* (escapes, `.git/`, symlinks, ambiguity, partial failures).

- Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}, git {_git_version()}
- Date: {dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
- Command: `{command}` ({repeat} runs of every case; times are medians)

| category | cases | applied correctly | refused correctly | handled correctly |
|---|---|---|---|---|
{chr(10).join(rows)}

Baseline, measured in the same run: `git apply --recount` on the same raw answers, for the
{len(diff_names)} cases whose answer is a unified diff.

| on the diff cases | handled correctly | median time per answer |
|---|---|---|
| auto_gvpie.edits | {_share(ours_diff)} | {ours_time * 1000:.2f} ms |
| git apply --recount (baseline) | {_share(base_first)} | {base_time * 1000:.2f} ms (includes starting a process) |
| ratio (ours / baseline) | {sum(r.correct for r in ours_diff)}/{max(sum(r.correct for r in base_first), 1)} = {sum(r.correct for r in ours_diff) / max(sum(r.correct for r in base_first), 1):.1f}x | {ours_time / base_time:.2f}x |

Median time to apply or refuse one answer, all {len(every)} cases: {all_time * 1000:.2f} ms.
Cases `git apply` got wrong: {base_misses}.

Cases handled wrongly by auto_gvpie.edits:
{misses}
"""


def _git_version() -> str:
    return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.split()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of every case, for the timing medians")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    cases = load_cases()
    ours = _measure(cases, run_case, args.repeat, "auto_gvpie.edits")
    diff_cases = [c for c in cases if is_diff_case(c)]
    base = _measure(diff_cases, run_git_apply, args.repeat, "git apply")
    command = "python bench/edit_corpus.py" + (f" --repeat {args.repeat}" if args.repeat != 5 else "")
    section = report(cases, ours, base, args.repeat, command)
    print(section)
    if not args.no_write:
        write_section("edit_corpus", "Edit corpus", section)
    return 0 if all(runs[0].correct for runs in ours.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
