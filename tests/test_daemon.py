"""The daemon as a user runs it: a real process watching a real task file, a loopback LLM, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from conftest import FIX, FIX_TASK, ROOT, git, run_cli, write_tasks
from llm_server import LLMServer, Reply, refusing_url

from auto_gvpie.daemon import STOP_GRACE_S
from auto_gvpie.inbox import read_inbox
from auto_gvpie.state import StateStore

PIXEL = ('```json\n{"kind": "pixel_program", "version": 1, "name": "box", "canvas": {"width": 8, "height": 8},'
         ' "ops": [{"op": "RECT", "x": 1, "y": 1, "width": 6, "height": 6, "color": [0, 255, 0]}]}\n```')


def pixel_task(task_id: str) -> dict:
    return {"id": task_id, "title": f"draw box {task_id}", "kind": "pixel"}


def title_of(request: dict) -> str:
    user = "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")
    return re.search(r"# Task: (.*)", user).group(1)


class DaemonProcess:
    """`auto-gvpie --daemon` in its own process, output to files so a chatty run never blocks on a pipe."""

    def __init__(self, home: Path, llm_url: str, *args: str):
        self.home = home
        self.out = open(home.parent / f"daemon-{time.monotonic_ns()}.out", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), "--daemon", "--home", str(home),
             "--llm-url", llm_url, "--no-memory", *args],
            stdout=self.out, stderr=subprocess.STDOUT, text=True, env={**os.environ, "GVPIE_LLM_RETRIES": "1"})
        self.pid = self.proc.pid

    def wait_started(self) -> None:
        wait_for(lambda: "daemon started" in log_text(self.home) or self.proc.poll() is not None, 60, "daemon start")
        assert self.proc.poll() is None, self.output()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_GRACE_S + 10) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []

    def start(home: Path, llm_url: str, *args: str) -> DaemonProcess:
        started.append(DaemonProcess(home, llm_url, *args))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def states(home: Path) -> dict:
    if not (home / ".gvpie" / "state.db").exists():
        return {}
    store = StateStore(home / ".gvpie", readonly=True)
    try:
        return store.all()
    except sqlite3.OperationalError:  # the daemon created the file and is still creating its tables
        return {}
    finally:
        store.close()


def done(home: Path, *ids: str) -> bool:
    now = states(home)
    return all(i in now and now[i].status == "done" for i in ids)


def log_text(home: Path) -> str:
    path = home / ".gvpie" / "logs" / "gvpie.log"
    return path.read_text() if path.exists() else ""


def status_text(home: Path) -> str:
    out = run_cli("--home", str(home), "--status", env={"GVPIE_MEMORY": "0"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def worktrees_left(home: Path, repo: Path) -> list:
    wt_dir = home / ".gvpie" / "worktrees"
    listed = [line for line in git(repo, "worktree", "list").splitlines() if ".gvpie" in line]
    return (list(wt_dir.iterdir()) if wt_dir.exists() else []) + listed


def test_appends_racing_from_many_processes_are_each_done_exactly_once(home, daemons):
    tasks_file = write_tasks(home, [])
    with LLMServer(responder=lambda body: PIXEL) as server:
        daemon = daemons(home, server.url, "--workers", "2", "--interval", "3600")
        daemon.wait_started()
        writers = []
        for w in range(3):  # raw `>>` appends, several per process, racing each other and --add
            lines = "; ".join(f"echo '{json.dumps(pixel_task(f'raw-{w}-{n}'))}' >> {tasks_file}; sleep 0.1"
                              for n in range(4))
            writers.append(subprocess.Popen(["bash", "-c", lines]))
        for n in range(3):
            writers.append(subprocess.Popen(
                [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), "--home", str(home), "--add",
                 f"draw box add-{n}", "--kind", "pixel", "--id", f"add-{n}"], stdout=subprocess.DEVNULL))
        assert all(p.wait(timeout=60) == 0 for p in writers)
        ids = [f"raw-{w}-{n}" for w in range(3) for n in range(4)] + [f"add-{n}" for n in range(3)]
        wait_for(lambda: done(home, *ids), 90, "all 15 tasks done")
        time.sleep(0.5)  # a duplicate run would show up as a late extra request
        asked = Counter(title_of(r) for r in server.requests)
    assert asked == Counter({f"draw box {i}": 1 for i in ids})
    assert sorted(t.id for t in read_inbox(tasks_file)) == sorted(ids)  # the user's file is intact
    assert all(states(home)[i].attempts == 1 for i in ids)
    assert all((home / "artifacts" / f"{i}.png").exists() for i in ids)
    code, _ = daemon.stop()
    assert code == 0, daemon.output()


def test_kill_9_mid_task_then_restart_finishes_it_once_and_leaves_no_worktree(home, repo, daemons):
    write_tasks(home, [FIX_TASK])
    with LLMServer([Reply(content=FIX, delay=120), FIX]) as server:
        first = daemons(home, server.url, "--repo", str(repo))
        wait_for(lambda: server.requests, 60, "the first LLM request")
        assert worktrees_left(home, repo)
        status = status_text(home)
        assert f"daemon: running, pid {first.pid}" in status
        assert re.search(r"daemon task: fix-add: asking test-model \(last heartbeat [\d.]+ s ago\)", status), status
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        assert states(home)["fix-add"].status == "in_progress"  # a dead lease, as a crash leaves it
        assert f"pid {first.pid} died" in status_text(home)

        second = daemons(home, server.url, "--repo", str(repo))
        wait_for(lambda: done(home, "fix-add"), 60, "the task to finish after the restart")
        code, _ = second.stop()
        assert code == 0, second.output()
        assert len(server.requests) == 2
    state = states(home)["fix-add"]
    assert state.attempts == 1 and state.lease_owner is None
    assert not worktrees_left(home, repo)
    calc = (repo / "calc.py").read_text()
    assert calc.count("return a + b") == 1 and "a - b" not in calc  # applied exactly once
    assert "recovered 1 task(s) from dead leases: fix-add" in log_text(home)


def test_an_editor_save_by_rename_is_noticed(home, daemons):
    tasks_file = write_tasks(home, [pixel_task("first")])
    with LLMServer(responder=lambda body: PIXEL) as server:
        daemon = daemons(home, server.url, "--interval", "3600", "--json")  # no re-scan: only the watcher
        wait_for(lambda: done(home, "first"), 60, "the first task")
        scratch = home / ".auto_tasks.json.goutputstream-X1Y2"
        scratch.write_text(json.dumps([pixel_task("first"), pixel_task("second")], indent=2) + "\n")
        os.rename(scratch, tasks_file)
        wait_for(lambda: done(home, "second"), 30, "the task saved by rename")
        assert Counter(title_of(r) for r in server.requests) == {"draw box first": 1, "draw box second": 1}
    code, _ = daemon.stop()
    assert code == 0
    assert "woke (file change)" in log_text(home)
    summary = json.loads(daemon.output().strip().splitlines()[-1])
    assert (summary["processed"], summary["done"]) == (2, 2)
    assert [t["id"] for t in summary["tasks"]] == ["first", "second"]


def test_sigterm_lets_the_test_command_finish_then_exits_0_with_the_task_pending(home, repo, tmp_path, daemons):
    started, finished = tmp_path / "test-started", tmp_path / "test-finished"
    write_tasks(home, [{**FIX_TASK, "tests": [f"touch {started} && sleep 2 && touch {finished}"]}])
    with LLMServer([FIX]) as server:
        daemon = daemons(home, server.url, "--repo", str(repo), "--sandbox", "off")  # the markers are outside
        wait_for(started.exists, 60, "the baseline test command to start")
        code, took = daemon.stop(signal.SIGTERM)
        assert server.requests == []  # it stopped before asking
    assert code == 0, daemon.output()
    assert took < STOP_GRACE_S
    assert finished.exists()  # the running test command was allowed to finish
    state = states(home)["fix-add"]
    assert state.status == "pending" and state.attempts == 0 and state.lease_owner is None
    assert not worktrees_left(home, repo)
    assert "a - b" in (repo / "calc.py").read_text()
    assert "stopping (SIGTERM)" in log_text(home)


def test_during_a_hung_llm_call_sigterm_waits_and_a_second_ctrl_c_stops_at_once(home, repo, daemons):
    write_tasks(home, [FIX_TASK])
    with LLMServer([Reply(content=FIX, delay=300)]) as server:
        daemon = daemons(home, server.url, "--repo", str(repo))
        wait_for(lambda: server.requests, 60, "the LLM request")
        daemon.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert daemon.proc.poll() is None  # the first signal waits for the running task (up to the grace period)
        code, took = daemon.stop(signal.SIGINT)
    assert code == 130, daemon.output()
    assert took < STOP_GRACE_S / 2
    state = states(home)["fix-add"]
    assert state.status == "pending" and state.lease_owner is None and state.attempts == 0
    assert not worktrees_left(home, repo)
    assert "stopping at once (second signal)" in log_text(home)


def test_a_second_daemon_on_the_same_home_is_refused_naming_the_first(home, daemons):
    write_tasks(home, [])
    with LLMServer([]) as server:
        first = daemons(home, server.url)
        first.wait_started()
        second = run_cli("--home", str(home), "--daemon", "--llm-url", server.url, "--no-memory", timeout=60)
        assert second.returncode == 2
        assert f"already running for this home (pid {first.pid}" in second.stderr
        assert f"kill -TERM {first.pid}" in second.stderr
        assert first.proc.poll() is None  # the refused one did not disturb it
        status = status_text(home)
        assert f"daemon: running, pid {first.pid}" in status and "daemon task: none" in status
        code, _ = first.stop()
    assert code == 0
    assert f"daemon: not running (pid {first.pid} stopped" in status_text(home)


def test_unreachable_llm_leaves_the_task_pending_and_the_daemon_running(home, daemons):
    write_tasks(home, [pixel_task("waits")])
    with refusing_url() as url:
        daemon = daemons(home, url, "--interval", "0.5")
        wait_for(lambda: "LLM unreachable" in log_text(home), 60, "the unreachable warning")
        time.sleep(2)  # several back-off retries
        assert daemon.proc.poll() is None, daemon.output()
        assert log_text(home).count("LLM unreachable") == 1  # said once, not at every retry
        assert log_text(home).count("released waits back to pending") >= 2  # it kept retrying
        # Each retry claims and releases the task; between two of them it is pending again.
        wait_for(lambda: states(home)["waits"].status == "pending", 30, "the task back to pending")
        assert states(home)["waits"].attempts == 0
        code, _ = daemon.stop()
    assert code == 0


def test_kill_9_with_200_tasks_redoes_only_the_task_in_flight(home, daemons):
    """Issue 10, defect 10: after a kill -9 and a restart, only the task running at the kill may be
    asked of the LLM again, while appends go on across the kill and the restart."""
    tasks_file = write_tasks(home, [])
    with LLMServer(responder=lambda body: Reply(content=PIXEL, delay=0.02)) as server:
        first = daemons(home, server.url, "--workers", "1", "--interval", "3600")
        first.wait_started()
        for n in range(100):
            with open(tasks_file, "a") as f:
                f.write(json.dumps(pixel_task(f"t{n}")) + "\n")
        wait_for(lambda: sum(s.status == "done" for s in states(home).values()) >= 40, 120, "40 tasks done")
        writer = subprocess.Popen(["bash", "-c", "; ".join(
            f"echo '{json.dumps(pixel_task(f'u{n}'))}' >> {tasks_file}; sleep 0.01" for n in range(100))])
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        in_flight = {i for i, s in states(home).items() if s.status == "in_progress"}
        asked_before = Counter(title_of(r) for r in server.requests)
        second = daemons(home, server.url, "--workers", "1", "--interval", "3600")
        assert writer.wait(timeout=60) == 0
        ids = [f"t{n}" for n in range(100)] + [f"u{n}" for n in range(100)]
        wait_for(lambda: done(home, *ids), 240, "all 200 tasks done")
        asked = Counter(title_of(r) for r in server.requests)
        code, _ = second.stop()
    assert code == 0, second.output()
    assert len(in_flight) <= 1
    again = {title for title, n in asked.items() if n > 1}
    assert again <= {f"draw box {i}" for i in in_flight}, (again, in_flight)
    assert all(title in asked_before for title in again)
    assert sum(asked.values()) <= 200 + len(in_flight)
