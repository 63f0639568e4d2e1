"""Several machines on one queue, as a user runs them: a real redis-server on a loopback port, a
dispatcher and worker processes (the real CLI), the scripted loopback LLM; faults made for real
(kill -9 of a worker and of the dispatcher, Redis restarted, a worker of another protocol)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import FIX, FIX_TASK, ROOT, git, run_cli, write_tasks
from llm_server import LLMServer, Reply
from test_daemon import PIXEL, done, log_text, pixel_task, states, title_of, wait_for

redis_py = pytest.importorskip("redis", reason="the queue extra (pip install 'auto-gvpie[queue]')")
pytest.importorskip("rq", reason="the queue extra (pip install 'auto-gvpie[queue]')")
REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt install redis-server)")

HEARTBEAT = "1"  # seconds: a killed worker's job is handed on within about 11 s (the hold's slack)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on a free loopback port, its data in `dir` with an append-only file (so a
    restart keeps the queue, as a server configured for it does)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=open(self.dir / "redis.log", "a"), stderr=subprocess.STDOUT)
        client = redis_py.Redis.from_url(self.url)
        wait_for(lambda: _pings(client), 20, "redis-server to answer")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # a clean shutdown: the AOF is complete
            self.proc.wait(timeout=20)

    def client(self):
        return redis_py.Redis.from_url(self.url)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis_py.exceptions.ConnectionError:
        return False


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


class Proc:
    """One auto-gvpie process (dispatcher or worker), its output in a file."""

    def __init__(self, log: Path, *args: str, env: dict | None = None):
        self.log = log
        self.out = open(log, "w+")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), *args],
                                     stdout=self.out, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "GVPIE_LLM_RETRIES": "1", "GVPIE_QUEUE_HEARTBEAT": HEARTBEAT,
                                          "GVPIE_SANDBOX": "off", **(env or {})})
        self.pid = self.proc.pid

    def output(self) -> str:
        self.out.flush()
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def procs(tmp_path):
    started: list[Proc] = []

    def dispatcher(home: Path, repo: Path, url: str, *args: str, env: dict | None = None, memory: bool = False) -> Proc:
        started.append(Proc(tmp_path / f"dispatcher-{len(started)}.out", "--daemon", "--queue", url, "--home", str(home),
                            "--repo", str(repo), *([] if memory else ["--no-memory"]), "--interval", "1", *args,
                            env=env))
        return started[-1]

    def worker(url: str, llm_url: str, name: str, *args: str) -> Proc:
        home = tmp_path / f"worker-{name}"
        home.mkdir(exist_ok=True)
        started.append(Proc(tmp_path / f"worker-{name}-{len(started)}.out", "--worker", "--queue", url, "--home", str(home),
                            "--llm-url", llm_url, *args))
        return started[-1]

    yield dispatcher, worker
    for proc in reversed(started):
        proc.kill()
        proc.out.close()


def dispatched(home: Path) -> list[tuple]:
    db = sqlite3.connect(f"file:{home / '.gvpie' / 'state.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT task_id, round, state, worker FROM dispatches ORDER BY created").fetchall()
    finally:
        db.close()


def runs(home: Path) -> Counter:
    db = sqlite3.connect(f"file:{home / '.gvpie' / 'state.db'}?mode=ro", uri=True)
    try:
        return Counter(task_id for (task_id,) in db.execute("SELECT task_id FROM runs"))
    finally:
        db.close()


def busy_workers(server: RedisServer) -> dict[str, str]:
    from auto_gvpie.jobqueue import broker
    return {w.name: w.task for w in broker.workers(server.client()) if w.task}


def assert_each_done_once(home: Path, ids: list[str]) -> None:
    now = states(home)
    assert {i: now[i].status for i in ids} == {i: "done" for i in ids}
    assert all(now[i].attempts == 1 and now[i].lease_owner is None for i in ids)
    assert runs(home) == Counter({i: 1 for i in ids})  # one attempt row each: no result applied twice
    applied = Counter(task for task, _, state, _ in dispatched(home) if state == "applied")
    assert applied == Counter({i: 1 for i in ids})
    assert all((home / "artifacts" / f"{i}.png").is_file() for i in ids)
    assert all((home / "artifacts" / f"{i}.attempt-1.json").is_file() for i in ids)


def many_tasks_across_faults(tmp_path, redis_server, procs, count: int) -> None:
    dispatcher, worker = procs
    home, repo = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    from conftest import make_repo
    make_repo(repo, {"README": "pictures\n"})
    ids = [f"p{n:03d}" for n in range(count)]
    write_tasks(home, [pixel_task(i) for i in ids])
    slow = ids[count // 5]  # its answer takes long: the worker running it is killed in the middle

    def answer(body: dict) -> Reply:
        return Reply(content=PIXEL, delay=4.0 if title_of(body) == f"draw box {slow}" else 0.1)

    with LLMServer(responder=answer) as llm:
        first = dispatcher(home, repo, redis_server.url)
        workers = [worker(redis_server.url, llm.url, f"w{n}") for n in range(3)]

        # kill -9 of a worker in the middle of a task: its job goes to another worker
        wait_for(lambda: any(title_of(r) == f"draw box {slow}" for r in list(llm.requests))
                 or first.proc.poll() is not None, 120, f"a worker asking the LLM for {slow}")
        wait_for(lambda: any(t.startswith(f"{slow}:") for t in busy_workers(redis_server).values()), 10,
                 f"the heartbeat of the worker running {slow}")
        assert first.proc.poll() is None, first.output()
        name = next(n for n, t in busy_workers(redis_server).items() if t.startswith(f"{slow}:"))
        victim = next(w for w in workers if name.endswith(f"-{w.pid}"))
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        assert states(home)[slow].status == "in_progress"

        # kill -9 of the dispatcher, then a new one: results that came meanwhile are taken
        wait_for(lambda: sum(s.status == "done" for s in states(home).values()) >= count // 3, 180, "a third done")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        done_before = {i for i, s in states(home).items() if s.status == "done"}
        time.sleep(1.0)  # workers go on with the queue meanwhile
        restarted_at = time.time()
        second = dispatcher(home, repo, redis_server.url)
        wait_for(lambda: done(home, *ids) or second.proc.poll() is not None, 60 + count * 1.5, f"all {count} done")
        assert second.proc.poll() is None, second.output()
        time.sleep(0.5)
        asked = Counter(title_of(r) for r in llm.requests)
        assert second.stop() == 0, second.output()
    assert_each_done_once(home, ids)
    # Every task was asked for, the one on the killed worker twice. (Another may have been asked
    # twice too, if a loaded machine was late with a heartbeat: the effect counted once above.)
    assert set(asked) == {f"draw box {i}" for i in ids}
    assert asked[f"draw box {slow}"] == 2  # asked by the killed worker, then by the one its job went to
    assert "picked up after" in log_text(home)
    # Jobs that ran while no dispatcher was up: their results were taken by the second one.
    db = sqlite3.connect(f"file:{home / '.gvpie' / 'state.db'}?mode=ro", uri=True)
    meanwhile = [t for t, picked in db.execute("SELECT task_id, picked_up FROM dispatches WHERE state='applied'")
                 if picked < restarted_at and t not in done_before]
    db.close()
    assert meanwhile
    finisher = next(w for task, _, _, w in dispatched(home) if task == slow)
    assert not finisher.endswith(f"-{victim.pid}")


def test_tasks_are_done_exactly_once_across_a_killed_worker_and_a_killed_dispatcher(tmp_path, redis_server, procs):
    many_tasks_across_faults(tmp_path, redis_server, procs, 40)


@pytest.mark.slow
def test_200_tasks_done_exactly_once_across_a_killed_worker_and_a_killed_dispatcher(tmp_path, redis_server, procs):
    many_tasks_across_faults(tmp_path, redis_server, procs, 200)


def test_a_code_task_through_a_bare_repository_patches_the_users_checkout(tmp_path, repo, home, redis_server, procs):
    from conftest import WRONG
    dispatcher, worker = procs
    bare = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    write_tasks(home, [FIX_TASK])
    with LLMServer([Reply(content=WRONG, delay=3), FIX]) as llm:  # the first attempt fails its test
        # Memory on: the dispatcher writes the LanceDB rows the worker's attempts produced.
        d = dispatcher(home, repo, redis_server.url, env={"GVPIE_QUEUE_GIT": str(bare)}, memory=True)
        w = worker(redis_server.url, llm.url, "code")
        wait_for(lambda: llm.requests or d.proc.poll() is not None, 120, "the first LLM request")
        running = run_cli("--home", str(home), "--status", env={"GVPIE_MEMORY": "0"})
        wait_for(lambda: done(home, "fix-add") or d.proc.poll() is not None, 120, "the code task")
        assert d.stop() == 0, d.output()
        status = run_cli("--home", str(home), "--status")
        assert w.stop(timeout=15) == 0, w.output()
    assert "daemon task: fix-add: running on " in running.stdout, running.stdout
    assert re.search(r"worker: \S+ on \S+ \(pid \d+\), LLM http://127\.0\.0\.1:\d+/v1: running fix-add: Fix add",
                     running.stdout), running.stdout
    assert "memory: 1 tasks, 3 runs" in status.stdout, status.stdout  # two attempts and the patch
    assert states(home)["fix-add"].attempts == 2
    assert runs(home) == Counter({"fix-add": 2})
    assert "expected 5" in (home / "artifacts" / "fix-add.attempt-1.json").read_text() or \
        "assert" in (home / "artifacts" / "fix-add.attempt-1.json").read_text()
    assert "a + b" in (repo / "calc.py").read_text()  # the dispatcher applied the patch
    assert (home / "artifacts" / "fix-add.patch").read_text().count("+    return a + b") == 1
    head = git(repo, "rev-parse", "HEAD").strip()
    assert git(bare, "rev-parse", f"refs/gvpie/bases/{head}").strip() == head  # the worker fetched it there
    assert f"queue: {redis_server.url}" in running.stdout
    assert list((tmp_path / "worker-code" / ".gvpie" / "worker" / "jobs").iterdir()) == []  # the job home is gone


def test_a_worker_of_another_protocol_is_refused_with_a_clear_message(tmp_path, redis_server, procs):
    _, worker = procs
    redis_server.client().set("gvpie:protocol", 999)
    w = worker(redis_server.url, "http://127.0.0.1:9/v1", "old")
    assert w.proc.wait(timeout=60) == 2
    out = w.output()
    assert "protocol 999" in out and "protocol 1" in out and "same auto-gvpie version" in out, out


def test_redis_restarted_and_dispatcher_stopped_meanwhile_lose_and_duplicate_nothing(tmp_path, repo, home,
                                                                                     redis_server, procs):
    dispatcher, worker = procs
    ids = [f"r{n}" for n in range(12)]
    tasks_file = write_tasks(home, [pixel_task(i) for i in ids[:6]])
    with LLMServer(responder=lambda body: Reply(content=PIXEL, delay=0.2)) as llm:
        d = dispatcher(home, repo, redis_server.url)
        workers = [worker(redis_server.url, llm.url, f"w{n}") for n in range(2)]
        wait_for(lambda: done(home, *ids[:2]), 90, "two tasks done")
        redis_server.stop()
        time.sleep(1.5)
        redis_server.start()  # same port, same data (append-only file)
        wait_for(lambda: done(home, *ids[:6]) or d.proc.poll() is not None, 90, "the first six done")
        assert d.proc.poll() is None, d.output()

        # A stop: no more enqueuing; what is appended waits; a new dispatcher takes it all up.
        assert d.stop() == 0, d.output()
        with open(tasks_file, "a") as f:
            for i in ids[6:]:
                f.write(json.dumps(pixel_task(i)) + "\n")
        time.sleep(1.0)
        assert not any(i in states(home) for i in ids[6:])  # nothing read or queued while stopped
        d2 = dispatcher(home, repo, redis_server.url)
        wait_for(lambda: done(home, *ids) or d2.proc.poll() is not None, 90, "all twelve done")
        assert d2.stop() == 0, d2.output()
        for w in workers:
            assert w.stop() == 0, w.output()
    assert_each_done_once(home, ids)
    assert "Redis" in log_text(home)


def test_once_and_status_never_import_the_queue_library(tmp_path, home):
    write_tasks(home, [])
    probe = ("import sys; from auto_gvpie.orchestrator import main; main(['--home', sys.argv[1], '--status']);"
             " main(['--home', sys.argv[1], '--once', '--no-memory']);"
             " assert 'rq' not in sys.modules and 'redis' not in sys.modules, 'queue library imported'")
    out = subprocess.run([sys.executable, "-c", probe, str(home)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr


def test_queue_flag_without_daemon_or_worker_is_a_usage_error(home):
    out = run_cli("--home", str(home), "--once", "--queue", "redis://127.0.0.1:1/0")
    assert out.returncode == 2 and "--queue goes with --daemon" in out.stderr
    out = run_cli("--home", str(home), "--worker")
    assert out.returncode == 2 and "--worker needs --queue" in out.stderr
    out = run_cli("--home", str(home), "--daemon", "--queue", "redis://127.0.0.1:1/0", "--goal", "x")
    assert out.returncode == 2 and "does not propose through a queue yet" in out.stderr


def test_cancel_of_a_task_running_on_a_worker_stops_its_job(tmp_path, repo, home, redis_server, procs):
    dispatcher, worker = procs
    write_tasks(home, [pixel_task("long"), pixel_task("next")])
    with LLMServer(responder=lambda body: Reply(content=PIXEL, delay=60 if title_of(body) == "draw box long" else 0)) as llm:
        d = dispatcher(home, repo, redis_server.url)
        w = worker(redis_server.url, llm.url, "c")
        wait_for(lambda: any(title_of(r) == "draw box long" for r in list(llm.requests)), 60, "the long task's request")
        out = run_cli("--home", str(home), "--cancel", "long", env={"GVPIE_MEMORY": "0"})
        assert out.returncode == 0, out.stderr
        wait_for(lambda: states(home)["long"].status == "cancelled", 30, "the cancel")
        # Its job was stopped on the worker, which goes on with the next task instead of waiting 60 s.
        wait_for(lambda: done(home, "next"), 30, "the next task")
        assert d.stop() == 0, d.output()
        assert w.stop(timeout=15) == 0, w.output()
    assert not (home / "artifacts" / "long.png").exists()
    assert "cancelled long" in log_text(home)
