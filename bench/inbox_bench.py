"""Inbox reads: what one pick of `--once` costs as the task file grows (issue 10, defect 9).

Tasks with 2 KB descriptions, 1,250 to 10,000 of them. Measured per size, median of several runs:
- a full read (first read of a file, or after an edit in the middle);
- a pick after one appended task: the incremental read plus the state-store sync and ordering,
  which is what `--once` and the daemon do before every task;
and, in the same run, the baseline: the inbox reader before this change (commit 69b1055), whose
every read was a full parse. Writes its section of docs/BENCHMARKS.md.

    .venv/bin/python bench/inbox_bench.py [--sizes 1250,2500,5000,10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from auto_gvpie.inbox import Inbox, read_inbox, runnable  # noqa: E402
from auto_gvpie.state import StateStore  # noqa: E402
from bench_report import machine, write_section  # noqa: E402

BASELINE_COMMIT = "69b1055"


def baseline_reader():
    """The old tasks.py, loaded from git as a module of its own, for a same-run comparison."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:auto_gvpie/tasks.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_tasks.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_tasks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_tasks"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.read_inbox


def task(n: int) -> dict:
    return {"title": f"Task number {n}: fix the parser", "description": ("The parser drops a line. " * 80)[:2000],
            "tests": [f"pytest -q tests/test_{n}.py"], "inputs": [f"src/mod_{n}.py"]}


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(size: int, runs: int, old_read) -> dict:
    work = Path(tempfile.mkdtemp())
    path = work / "auto_tasks.json"
    path.write_text("\n".join(json.dumps(task(n)) for n in range(size)) + "\n")
    full = median_ms(lambda: read_inbox(path), runs)
    old = median_ms(lambda: old_read(path), max(1, runs // 2))
    store = StateStore(work / ".gvpie")
    inbox = Inbox(path)
    store.sync(inbox.read())
    counter = iter(range(size, size + 10_000))

    def pick() -> None:
        with open(path, "a") as handle:
            handle.write(json.dumps(task(next(counter))) + "\n")
        tasks = store.sync(inbox.read())
        runnable(tasks, store.statuses(tasks))

    per_pick = median_ms(pick, runs)
    store.close()
    return {"size": size, "mb": path.stat().st_size / 1e6, "full_ms": full, "pick_ms": per_pick, "old_ms": old}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1250,2500,5000,10000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    old_read = baseline_reader()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(size, args.runs, old_read)
        rows.append(row)
        print(f"{size:>6} tasks ({row['mb']:.1f} MB): full read {row['full_ms']:.0f} ms, pick after an append "
              f"{row['pick_ms']:.1f} ms; before: every pick {row['old_ms']:.0f} ms", flush=True)
    body = "\n".join([
        f"Machine: {machine()}. Date: {datetime.now(timezone.utc):%Y-%m-%d}. "
        f"Command: `.venv/bin/python bench/inbox_bench.py --runs {args.runs}`.",
        "",
        "Tasks with 2 KB descriptions, one JSON line each. *Pick* = what `--once` and the daemon do before every "
        "task: read the inbox (only the appended line is parsed), sync the state store, order the ready tasks. "
        f"*Before* = the reader at {BASELINE_COMMIT}, which parsed the whole file (quadratically) at every pick. "
        "Medians in ms.",
        "",
        "| tasks | file | full read | pick after an append | before: every pick | before ÷ pick |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['size']:,} | {r['mb']:.1f} MB | {r['full_ms']:.0f} | {r['pick_ms']:.1f} | {r['old_ms']:.0f} | "
          f"{r['old_ms'] / r['pick_ms']:.0f}× |" for r in rows]])
    if not args.no_write:
        write_section("inbox", "Inbox reads (`bench/inbox_bench.py`)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
