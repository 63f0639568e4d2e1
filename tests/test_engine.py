"""The attempt loop end to end: the real CLI, a real git repo, a real HTTP server speaking the OpenAI wire format."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from conftest import FIX, FIX_TASK, ROOT, WRONG, git, run_cli, write_tasks
from llm_server import LLMServer, Reply, refusing_url

WRONG2 = "calc.py\n```python\ndef add(a, b):\n    return b - a\n\n\ndef mul(a, b):\n    return a * b\n```\n"
MADE_UP = "calc.py\n```\n<<<<<<< SEARCH\ndef add(x, y):\n    return x - y\n=======\ndef add(x, y):\n    return x + y\n>>>>>>> REPLACE\n```\n"
PIXEL = ('Here is your picture:\n```json\n{"kind": "pixel_program", "version": 1, "name": "box",'
         ' "canvas": {"width": 16, "height": 16}, "palette": {"fg": [0, 255, 0]},'
         ' "ops": [{"op": "RECT", "x": 2, "y": 2, "width": 12, "height": 12, "color": "fg"}]}\n```\nEnjoy!')



def cli(home: Path, repo: Path | None, server_url: str, *args: str) -> subprocess.CompletedProcess:
    base = ["--home", str(home), "--llm-url", server_url, "--no-memory"]
    if repo is not None:
        base += ["--repo", str(repo)]
    return run_cli(*base, *args)


def status(home: Path) -> dict:
    out = run_cli("--home", str(home), "--status", "--json")
    assert out.returncode == 0, out.stderr
    return {t["id"]: t for t in json.loads(out.stdout)["tasks"]}


def worktrees_left(home: Path, repo: Path) -> list:
    wt_dir = home / ".gvpie" / "worktrees"
    listed = [l for l in git(repo, "worktree", "list").splitlines() if ".gvpie" in l]
    return (list(wt_dir.iterdir()) if wt_dir.exists() else []) + listed


def user_prompt(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")


def test_fixed_on_second_attempt_because_the_failure_was_fed_back(home, repo):
    write_tasks(home, [FIX_TASK])
    with LLMServer([WRONG, FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["processed"] == 1 and report["done"] == 1 and report["failed"] == 0
    (task,) = report["tasks"]
    assert task["id"] == "fix-add" and task["status"] == "done" and task["attempts"] == 2
    assert str(home / "artifacts" / "fix-add.patch") in task["artifacts"]
    second = user_prompt(server.requests[1])
    assert "assert 6 == 5" in second or "assert add(2, 3) == 5" in second  # the pytest failure output
    assert "return a * b" in second  # the file as the previous attempt left it
    # The patch reached the user's clean checkout, and the worktree is gone.
    assert "return a + b" in (repo / "calc.py").read_text()
    assert "+    return a + b" in (home / "artifacts" / "fix-add.patch").read_text()
    assert json.loads((home / "artifacts" / "fix-add.attempt-1.json").read_text())["outcome"] == "tests_failed"
    assert not worktrees_left(home, repo)


def test_fails_after_max_attempts_with_last_error_in_status(home, repo):
    write_tasks(home, [{**FIX_TASK, "max_attempts": 2}])
    with LLMServer([WRONG, WRONG2]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["tasks"][0]["status"] == "failed"
    task = status(home)["fix-add"]
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "tests fail" in task["error"]
    table = run_cli("--home", str(home), "--status").stdout
    assert "fix-add" in table and "failed" in table and "2/2" in table
    assert (repo / "calc.py").read_text().count("a - b") == 1  # nothing reached the checkout
    assert not worktrees_left(home, repo)


def test_refused_edit_is_explained_to_the_model(home, repo):
    write_tasks(home, [FIX_TASK])
    with LLMServer([MADE_UP, FIX]) as server:
        out = cli(home, repo, server.url, "--once")
    assert out.returncode == 0, out.stderr
    second = user_prompt(server.requests[1])
    assert "refused" in second and "calc.py" in second
    assert "def add(x, y)" in second  # the model sees what it sent


def test_bad_answers_are_failed_attempts_not_crashes(home, repo):
    write_tasks(home, [{**FIX_TASK, "max_attempts": 3}])
    with LLMServer([Reply(content=""), Reply(content="calc.py\n```python\ndef add(", finish_reason="length"), FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["attempts"] == 3
    third = user_prompt(server.requests[2])
    assert "cut off" in third


def test_unreachable_llm_exits_3_and_leaves_tasks_pending(home, repo):
    write_tasks(home, [FIX_TASK, {"title": "draw an icon", "kind": "pixel"}])
    with refusing_url() as url:
        out = cli(home, repo, url, "--once", "--json")
    assert out.returncode == 3
    assert "no LLM server at" in out.stderr and "--llm-url" in out.stderr
    assert json.loads(out.stdout) == {"processed": 0, "done": 0, "failed": 0, "tasks": []}
    assert {t["status"] for t in status(home).values()} == {"pending"}
    assert all(t["attempts"] == 0 for t in status(home).values())
    assert not worktrees_left(home, repo)


def test_users_uncommitted_changes_are_never_overwritten(home, repo):
    write_tasks(home, [FIX_TASK])
    (repo / "calc.py").write_text("# my unsaved experiment\n" + (repo / "calc.py").read_text())
    before = (repo / "calc.py").read_text()
    with LLMServer([FIX]) as server:
        out = cli(home, repo, server.url, "--once")
    assert out.returncode == 0, out.stderr
    assert (repo / "calc.py").read_text() == before
    assert "local changes in calc.py" in out.stderr + out.stdout
    assert "return a + b" in (home / "artifacts" / "fix-add.patch").read_text()


def test_echo_appended_task_is_picked_up(home, repo):
    tasks = write_tasks(home, [])
    with open(tasks, "a") as f:
        f.write(json.dumps({"id": "appended", "title": "draw a box", "kind": "pixel"}) + "\n")
    with LLMServer([PIXEL]) as server:
        out = cli(home, None, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["id"] == "appended"
    assert (home / "artifacts" / "appended.json").exists() and (home / "artifacts" / "appended.png").exists()
    assert server.requests[0].get("response_format", {}).get("type") == "json_schema"


def test_corrupt_task_file_exits_2_and_is_left_exactly_as_it_was(home):
    tasks = home / "auto_tasks.json"
    original = b'[\n  {"title": "ok"},\n  {"title": "broken" "kind": "code"}\n]\n'
    tasks.write_bytes(original)
    with LLMServer([]) as server:
        for flags in (["--once"], ["--status"], ["--dry-run"]):
            out = cli(home, None, server.url, *flags)
            assert out.returncode == 2
            assert "auto_tasks.json:3:22" in out.stderr
        assert server.requests == []
    assert tasks.read_bytes() == original


def test_dry_run_changes_nothing_and_calls_no_llm(home, repo):
    write_tasks(home, [FIX_TASK])
    with LLMServer([]) as server:
        out = cli(home, repo, server.url, "--dry-run")
        assert server.hits == []
    assert out.returncode == 0
    assert "fix-add" in out.stdout and "python -m pytest -q test_calc.py" in out.stdout
    assert sorted(p.name for p in home.iterdir()) == ["auto_tasks.json"]


def test_add_appends_and_the_task_runs(home, repo):
    out = run_cli("--home", str(home), "--add", "Fix add() in calc.py", "--kind", "code", "--input", "calc.py",
                  "--test", "python -m pytest -q test_calc.py", "--priority", "7", "--json")
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)["added"]
    with LLMServer([FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert json.loads(out.stdout)["tasks"][0]["id"] == added["id"]
    assert status(home)[added["id"]]["status"] == "done"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_releases_the_task_and_removes_the_worktree(home, repo, signum):
    write_tasks(home, [FIX_TASK])
    with LLMServer([Reply(content=FIX, delay=30)]) as server:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), "--home", str(home), "--repo", str(repo),
             "--llm-url", server.url, "--no-memory", "--once"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.requests, "the worker never asked the LLM"
        assert worktrees_left(home, repo)  # the attempt really is under way in a worktree
        proc.send_signal(signum)
        proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert status(home)["fix-add"]["status"] == "pending"
    assert not worktrees_left(home, repo)
    assert (repo / "calc.py").read_text().count("a - b") == 1


def test_finished_tasks_are_never_run_again(home, repo):
    write_tasks(home, [FIX_TASK])
    with LLMServer([FIX]) as server:
        assert cli(home, repo, server.url, "--once").returncode == 0
        out = cli(home, repo, server.url, "--once", "--json")
        assert len(server.requests) == 1
    assert json.loads(out.stdout) == {"processed": 0, "done": 0, "failed": 0, "tasks": []}


def test_baseline_failures_are_not_blamed_on_the_patch(home, repo):
    (repo / "test_other.py").write_text("def test_other():\n    assert False, 'broken before'\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "broken test")
    write_tasks(home, [{**FIX_TASK, "max_attempts": 2,
                        "tests": ["python -m pytest -q test_calc.py", "python -m pytest -q test_other.py"]}])
    with LLMServer([FIX, FIX]) as server:
        cli(home, repo, server.url, "--once")
    assert "it still fails as it did before your change" in user_prompt(server.requests[1])


def test_a_second_once_never_takes_a_task_a_live_once_is_running(home, repo, tmp_path):
    """Issue 10, defect 1: the second process used to 'recover' the live lease, delete the first one's
    worktree and run the task again (two attempt-1 records, a correct fix ending failed)."""
    started, release = tmp_path / "baseline-started", tmp_path / "release"
    # The first process holds the task until the test has looked (not for a fixed time: a loaded
    # machine can take longer than that just to start the second process).
    hold = f"for i in $(seq 1200); do [ -e {release} ] && break; sleep 0.1; done"
    slow = {**FIX_TASK, "tests": [f"touch {started}; {hold}; python -m pytest -q test_calc.py"]}
    write_tasks(home, [slow])
    with LLMServer([FIX]) as server:
        first = subprocess.Popen(
            [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), "--home", str(home), "--repo", str(repo),
             "--llm-url", server.url, "--no-memory", "--once", "--json", "--sandbox", "off"],  # the marker is outside
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        worktree = home / ".gvpie" / "worktrees" / "fix-add"
        assert worktree.exists()
        second = cli(home, repo, server.url, "--once", "--json")
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["processed"] == 0
        assert "recovered" not in second.stderr
        assert worktree.exists()  # the live task's worktree was left alone
        release.touch()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert len(server.requests) == 1  # asked once, by the first process only
    assert json.loads(out)["tasks"][0]["status"] == "done"
    assert status(home)["fix-add"]["attempts"] == 1
    assert "return a + b" in (repo / "calc.py").read_text()
