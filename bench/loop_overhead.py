"""Time per attempt spent in Auto-GVPIE itself: everything but the LLM wait and the test command.

A zero-latency loopback LLM and the trivial test command `true`. Two shapes:
- retries: one task of 60 attempts whose tests always fail (edit, test, feed back, re-prompt);
- tasks: 50 one-attempt tasks (adds worktree creation/removal, baseline run, patch, apply).
Overhead = wall time − time inside the LLM call − time inside test commands.
Baseline in the same run: the floor an attempt cannot go below (one loopback
chat request + one `bash -c true`), to put the overhead in proportion.

    .venv/bin/python bench/loop_overhead.py [--memory]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from auto_gvpie.config import load_settings  # noqa: E402
from auto_gvpie.engine import Engine  # noqa: E402
from auto_gvpie.llm import open_llm  # noqa: E402
from auto_gvpie.memory import Memory  # noqa: E402
from auto_gvpie.runner import run_command  # noqa: E402
from auto_gvpie.inbox import parse_inbox  # noqa: E402
from auto_gvpie.state import StateStore  # noqa: E402
from bench_report import machine, write_section  # noqa: E402
from llm_server import LLMServer  # noqa: E402


def make_repo(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "value.py").write_text("VALUE = 0\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(path), *args], check=True)


def changing_answers():
    counter = iter(range(1, 10**9))
    return lambda body: f"value.py\n```python\nVALUE = {next(counter)}\n```\n"


def measure(home: Path, tasks: list[dict], memory_on: bool) -> list[float]:
    """Per-attempt overhead in ms."""
    (home / "auto_tasks.json").write_text(json.dumps(tasks))
    with LLMServer(responder=changing_answers()) as server:
        settings = load_settings({"home": str(home), "repo": str(home / "repo"), "llm_url": server.url,
                                  "memory": memory_on})
        store = StateStore(settings.state_dir)
        llm = open_llm(settings)
        memory = Memory(settings.home, enabled=memory_on)
        engine = Engine(settings, store, llm, memory, owner="bench")
        inbox = parse_inbox((home / "auto_tasks.json").read_text())
        store.sync(inbox)
        overheads = []
        for task in inbox:
            start = time.time()
            engine.run_task(task)
            wall = time.time() - start
            runs = store.runs(task.id)
            if len(runs) == 1:
                # The baseline test run is not in `runs`, so it counts as overhead here.
                overheads.append((wall - runs[0]["llm_seconds"] - runs[0]["test_seconds"]) * 1000)
            else:
                # Within one task: the gap between consecutive attempt records, less what they waited on.
                for prev, run in zip(runs, runs[1:]):
                    gap = run["created"] - prev["created"]
                    overheads.append((gap - run["llm_seconds"] - run["test_seconds"]) * 1000)
        memory.close()
    return overheads


def floor_ms(n: int = 50) -> list[float]:
    with LLMServer(responder=lambda body: "ok") as server:
        import requests
        session = requests.Session()
        session.trust_env = False
        times = []
        for _ in range(n):
            start = time.perf_counter()
            session.post(f"{server.url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
            run_command("true", Path("/tmp"), 10)
            times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="also measure with LanceDB memory on")
    args = parser.parse_args()
    floor = statistics.median(floor_ms())
    rows = []
    for memory_on in ([False, True] if args.memory else [False]):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            make_repo(home / "repo")
            retry = measure(home, [{"id": "retry", "title": "keep changing VALUE", "kind": "code",
                                    "inputs": ["value.py"], "tests": ["false"], "max_attempts": 60}], memory_on)
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            make_repo(home / "repo")
            tasks = measure(home, [{"id": f"t{i}", "title": f"set VALUE {i}", "kind": "code", "inputs": ["value.py"],
                                    "tests": ["true"], "max_attempts": 1} for i in range(50)], memory_on)
        label = "memory on" if memory_on else "memory off"
        for shape, values in (("retry attempts (60 in one task)", retry), ("one-attempt tasks (50)", tasks)):
            med = statistics.median(values)
            rows.append(f"| {shape}, {label} | {len(values)} | {med:.1f} | "
                        f"{statistics.quantiles(values, n=20)[-1]:.1f} | {med / floor:.1f}× |")
            print(f"{shape}, {label}: median {med:.1f} ms per attempt")
    body = "\n".join([
        f"Machine: {machine()}; {date.today().isoformat()}. Command: `.venv/bin/python bench/loop_overhead.py{' --memory' if args.memory else ''}`.",
        "",
        "Time per attempt spent in Auto-GVPIE itself (wall − LLM wait − test commands), zero-latency loopback LLM, "
        "test command `true`/`false`. Target: ≤ 150 ms per attempt (median).",
        f"Baseline (same run): one loopback chat request + one `bash -c true` = {floor:.1f} ms median.",
        "",
        "| shape | n | median ms | p95 ms | × baseline |",
        "|---|---|---|---|---|",
        *rows,
    ])
    write_section("loop_overhead", "Loop overhead (issue 2)", body)


if __name__ == "__main__":
    main()
