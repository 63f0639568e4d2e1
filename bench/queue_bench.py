"""Workers on a Redis queue against the single-machine daemon, when the LLM is the bottleneck.

The loopback LLM answers every request after a fixed delay (default 2 s), so the numbers show
how the work spreads over LLM servers, not how fast this machine's CPU is. Every configuration
gets the same N pixel tasks, written at once to the task file of a running daemon (or
dispatcher, with its workers already up); throughput = N / (write → the last task done in the
state store).

- daemon: `--daemon` with 1 worker (the default; the baseline) and with 4 workers (one machine,
  one LLM server with 4 slots);
- queue: `--daemon --queue` dispatching to 1, 2 and 4 `--worker` processes, each with its own
  LLM URL (here the same loopback server, which answers any number of requests at once).

Pickup latency through the queue: one task at a time, idle workers; append → the job's start on
a worker (watcher, dispatch, Redis, RQ's fork), and enqueue → start (the queue alone), from the
dispatcher's ledger.

    .venv/bin/python bench/queue_bench.py [--tasks 16] [--runs 2] [--delay 2] [--pickups 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_report import machine, write_section  # noqa: E402
from llm_server import LLMServer, Reply  # noqa: E402

CLI = [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py")]
PIXEL = ('{"kind": "pixel_program", "version": 1, "name": "box", "canvas": {"width": 16, "height": 16},'
         ' "ops": [{"op": "RECT", "x": 2, "y": 2, "width": 12, "height": 12, "color": [0, 255, 0]}]}')
ENV = {**os.environ, "GVPIE_LLM_RETRIES": "1", "GVPIE_SANDBOX": "off", "GVPIE_QUEUE_HEARTBEAT": "2",
       "HF_HUB_OFFLINE": "1"}


def task(task_id: str) -> dict:
    return {"id": task_id, "title": f"draw box {task_id}", "kind": "pixel"}


def wait_until(predicate, timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll)


def statuses(home: Path) -> dict[str, str]:
    path = home / ".gvpie" / "state.db"
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return dict(db.execute("SELECT id, status FROM tasks").fetchall())
        finally:
            db.close()
    except sqlite3.OperationalError:
        return {}


def make_home(path: Path) -> tuple[Path, Path]:
    home, repo = path / "home", path / "repo"
    home.mkdir(parents=True)
    repo.mkdir()
    for args in (["init", "-q"], ["-c", "user.email=b@e", "-c", "user.name=b", "commit", "-q", "--allow-empty", "-m", "base"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    (home / "auto_tasks.json").write_text("[]\n")
    return home, repo


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=ENV)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def log_has(home: Path, text: str) -> bool:
    path = home / ".gvpie" / "logs" / "gvpie.log"
    return path.exists() and text in path.read_text()


def up(path: Path, llm_url: str, redis_url: str | None, workers: int) -> tuple[Path, list[subprocess.Popen]]:
    """A running daemon (redis_url None, `workers` threads) or dispatcher with `workers` workers."""
    home, repo = make_home(path)
    procs = []
    common = ["--home", str(home), "--repo", str(repo), "--no-memory", "--interval", "3600"]
    if redis_url is None:
        procs.append(start(["--daemon", *common, "--llm-url", llm_url, "--workers", str(workers)], path / "daemon.out"))
    else:
        procs.append(start(["--daemon", "--queue", redis_url, *common], path / "dispatcher.out"))
        from auto_gvpie.jobqueue import broker
        conn = broker.connect(redis_url)
        for key in conn.scan_iter(match=broker.WORKER_KEY + "*"):
            conn.delete(key)  # the last configuration's workers, gone but not yet expired
        for n in range(workers):
            whome = path / f"worker{n}"
            whome.mkdir()
            procs.append(start(["--worker", "--queue", redis_url, "--home", str(whome), "--llm-url", llm_url],
                               path / f"worker{n}.out"))
        wait_until(lambda: len(broker.workers(conn)) == workers, 60, f"{workers} worker(s)")
    wait_until(lambda: log_has(home, "daemon started"), 60, "the daemon to start")
    if redis_url is not None:
        wait_until(lambda: log_has(home, "dispatching to"), 60, "the dispatcher to connect")
    return home, procs


def throughput(path: Path, llm_url: str, redis_url: str | None, workers: int, count: int) -> float:
    home, procs = up(path, llm_url, redis_url, workers)
    try:
        ids = [f"t{n:03d}" for n in range(count)]
        started = time.monotonic()
        (home / "auto_tasks.json").write_text(json.dumps([task(i) for i in ids]) + "\n")
        wait_until(lambda: (s := statuses(home)) and all(s.get(i) == "done" for i in ids), 60 + count * 10,
                   f"{count} tasks", poll=0.05)
        return count / (time.monotonic() - started)
    finally:
        stop(procs)


def pickups(path: Path, llm_url: str, redis_url: str, samples: int) -> tuple[list[float], list[float]]:
    home, procs = up(path, llm_url, redis_url, 1)
    append_to_start, enqueue_to_start = [], []
    try:
        for n in range(samples):
            task_id = f"pick{n}"
            appended = time.time()
            with open(home / "auto_tasks.json", "a") as f:
                f.write(json.dumps(task(task_id)) + "\n")
            wait_until(lambda: statuses(home).get(task_id) == "done", 120, task_id)
            db = sqlite3.connect(f"file:{home / '.gvpie' / 'state.db'}?mode=ro", uri=True)
            created, picked = db.execute("SELECT created, picked_up FROM dispatches WHERE task_id=?", (task_id,)).fetchone()
            db.close()
            append_to_start.append(picked - appended)
            enqueue_to_start.append(picked - created)
    finally:
        stop(procs)
    return append_to_start, enqueue_to_start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the LLM takes for every answer")
    parser.add_argument("--pickups", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    configs = [("daemon, 1 worker (baseline)", None, 1), ("daemon, 4 workers, one LLM", None, 4),
               ("queue, 1 worker", "q", 1), ("queue, 2 workers", "q", 2), ("queue, 4 workers", "q", 4)]
    rates: dict[str, list[float]] = {name: [] for name, *_ in configs}
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp, \
            LLMServer(responder=lambda body: Reply(content=PIXEL, delay=args.delay)) as llm:
        root = Path(tmp)
        port = free_port()
        redis = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        redis_url = f"redis://127.0.0.1:{port}/0"
        try:
            time.sleep(0.5)
            for run in range(args.runs):
                for n, (name, queue, workers) in enumerate(configs):
                    rate = throughput(root / f"run{run}-c{n}", llm.url, redis_url if queue else None, workers, args.tasks)
                    rates[name].append(rate)
                    print(f"run {run + 1}/{args.runs}: {name}: {rate:.3f} tasks/s", flush=True)
            a2s, e2s = pickups(root / "pickups", llm.url, redis_url, args.pickups)
        finally:
            redis.terminate()
            redis.wait(timeout=20)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    base = medians["daemon, 1 worker (baseline)"]
    ideal = 1 / args.delay
    rows = "\n".join(f"| {k} | {v:.3f} | {v / base:.2f}× | {v / ideal:.2f} | {', '.join(f'{r:.3f}' for r in rates[k])} |"
                     for k, v in medians.items())

    def ms(values: list[float]) -> str:
        values = sorted(values)
        return f"{statistics.median(values) * 1000:.0f} ms | {values[int(0.95 * (len(values) - 1))] * 1000:.0f} ms"

    q1, d1 = medians["queue, 1 worker"], base
    overhead = max(0.0, 1 / q1 - 1 / d1)
    reading = (f"Reading: each queued task costs about {overhead * 1000:.0f} ms more than a local one (the fork of a "
               "job, the git fetch and checkout of the base commit, the engine's set-up, the result's way back), "
               f"so one worker does {q1 / d1:.2f}× the daemon's rate; workers add up, each with its own LLM server "
               f"({medians['queue, 4 workers'] / q1:.2f}× for 4 workers over 1 here, all on this 2-core machine). "
               "`--workers 4` on one machine does better when one LLM server can answer 4 requests at once "
               "(this loopback one can), having no per-task queue cost; the queue is for the case it is meant for, several machines each with "
               "its own server, which no single daemon can use.")
    body = f"""
Machine: {machine()}, shared with other work. Date: {date.today().isoformat()}.
Command: `.venv/bin/python bench/queue_bench.py --tasks {args.tasks} --runs {args.runs} --delay {args.delay:g} --pickups {args.pickups}`
(redis-server {subprocess.run([redis_server, '--version'], capture_output=True, text=True).stdout.split()[2].removeprefix('v=')},
loopback LLM answering every request after {args.delay:g} s, memory off, pixel tasks, all processes on this machine).

**Throughput**, {args.tasks} tasks written at once, write → last done, median of {args.runs} runs
(configurations interleaved within each run). "per LLM-second" = tasks/s × delay: 1.00 is one LLM
kept busy all the time.

| | tasks/s | vs daemon, 1 worker | per LLM-second | runs (tasks/s) |
|---|---|---|---|---|
{rows}

**Pickup latency through the queue**, {args.pickups} tasks one at a time, one idle worker:

| | median | p95 |
|---|---|---|
| append to the task file → job starts on the worker | {ms(a2s)} |
| enqueue → job starts on the worker (Redis + RQ's fork) | {ms(e2s)} |

{reading}
"""
    print(body)
    if not args.no_write:
        write_section("queue_bench", "Queue: workers on Redis against the single-machine daemon (issue 14)", body)


if __name__ == "__main__":
    main()
