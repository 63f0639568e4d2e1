"""Cancelling tasks (`--cancel`, the same code the dashboard calls): a pending task is settled at
once; a running one stops cleanly, its worktree removed and the user's checkout untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import CALC, FIX, FIX_TASK, ROOT, git, run_cli, write_tasks
from llm_server import LLMServer, Reply

from auto_gvpie.inbox import Task
from auto_gvpie.state import StateStore


def statuses(home: Path) -> dict:
    out = run_cli("--home", str(home), "--status", "--json")
    assert out.returncode == 0, out.stderr
    return {t["id"]: t for t in json.loads(out.stdout)["tasks"]}


def test_cancel_a_pending_task_and_it_never_runs(home, repo):
    write_tasks(home, [FIX_TASK, {"id": "other", "title": "Fix mul", "kind": "code", "inputs": ["calc.py"],
                                  "tests": ["python -m pytest -q test_calc.py"]}])
    out = run_cli("--home", str(home), "--cancel", "fix-add")
    assert out.returncode == 0, out.stderr
    assert "cancelled fix-add" in out.stdout
    assert statuses(home)["fix-add"]["status"] == "cancelled"
    with LLMServer([FIX]) as server:
        run = run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server.url, "--no-memory",
                      "--once", "--json", "--max-tasks", "1")
    assert [t["id"] for t in json.loads(run.stdout)["tasks"]] == ["other"]  # the cancelled one was skipped
    again = run_cli("--home", str(home), "--cancel", "fix-add")
    assert again.returncode == 2 and "already cancelled" in again.stderr


def test_cancel_an_unknown_task_is_a_usage_error(home):
    write_tasks(home, [FIX_TASK])
    out = run_cli("--home", str(home), "--cancel", "nope", "--json")
    assert out.returncode == 2 and "no task 'nope'" in out.stderr


def test_cancel_a_task_appended_a_moment_ago(home):
    write_tasks(home, [])
    added = run_cli("--home", str(home), "--add", "Draw a cat", "--kind", "pixel", "--json")
    task_id = json.loads(added.stdout)["added"]["id"]
    out = run_cli("--home", str(home), "--cancel", task_id, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"cancelled": task_id, "was": "pending"}
    assert statuses(home)[task_id]["status"] == "cancelled"


def test_cancel_a_running_task_stops_it_cleanly(home, repo):
    """The model streams slowly; while it answers, `--cancel` asks the task to stop. The worker ends
    it `cancelled`, removes its worktree, and the user's checkout is as it was."""
    write_tasks(home, [FIX_TASK])
    slow = Reply(content=FIX + " ".join(["padding"] * 400), token_delay=0.05)
    with LLMServer([slow]) as server:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), "--home", str(home), "--repo", str(repo),
             "--llm-url", server.url, "--no-memory", "--once", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "GVPIE_LLM_RETRIES": "1"})
        try:
            deadline = time.monotonic() + 60
            while "LLM answering" not in _stage(home):
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "the task never started answering"
                time.sleep(0.2)
            cancel = run_cli("--home", str(home), "--cancel", "fix-add")
            assert cancel.returncode == 0 and "asked fix-add to stop" in cancel.stdout
            stdout, stderr = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
    assert worker.returncode == 0, stderr
    (task,) = json.loads(stdout)["tasks"]
    assert task["status"] == "cancelled" and task["error"] == "cancelled by the user"
    assert statuses(home)["fix-add"]["status"] == "cancelled"
    assert (repo / "calc.py").read_text() == CALC  # the checkout is untouched
    assert not [l for l in git(repo, "worktree", "list").splitlines() if ".gvpie" in l]
    wt_dir = home / ".gvpie" / "worktrees"
    assert not wt_dir.exists() or not list(wt_dir.iterdir())
    assert len(server.requests) == 1  # it stopped: no second attempt was asked for


def _stage(home: Path) -> str:
    store = StateStore(home / ".gvpie", readonly=True)
    try:
        state = store.get("fix-add")
        return (state.stage or "") if state else ""
    finally:
        store.close()


def test_a_cancel_requested_of_a_task_whose_worker_died_is_kept(tmp_path):
    """A worker killed between the request and its next check: the task is not run again."""
    store = StateStore(tmp_path / ".gvpie")
    store.sync([Task(id="t1", title="something", kind="code")])
    assert store.claim("t1", "worker-a")
    assert store.request_cancel("t1") == "in_progress"
    assert store.cancel_requested("t1", "worker-a")
    store.db.execute("UPDATE tasks SET lease_pid=999999999, lease_start=NULL WHERE id='t1'")  # a dead holder
    assert store.recover_stale() == ["t1"]
    assert store.get("t1").status == "cancelled"
    store.close()
