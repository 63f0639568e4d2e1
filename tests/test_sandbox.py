"""The sandbox around test commands: real bubblewrap, real commands, a real git worktree."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

from auto_gvpie import sandbox as sandbox_module
from auto_gvpie.config import ConfigError, load_settings
from auto_gvpie.runner import run_command
from auto_gvpie.sandbox import SandboxError, open_sandbox
from conftest import git, make_repo

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture(autouse=True)
def fresh_probe():
    # The probe and the warning are once per process; each test here wants its own.
    sandbox_module._probe.cache_clear()
    sandbox_module._warn_once.cache_clear()
    yield
    sandbox_module._probe.cache_clear()
    sandbox_module._warn_once.cache_clear()


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A linked worktree laid out as the engine makes it; main repo and worktree both under /tmp,
    which the sandbox hides."""
    repo = make_repo(tmp_path / "repo", {"calc.py": "X = 1\n", ".gitignore": "__pycache__/\n.pytest_cache/\n"})
    path = tmp_path / "home" / ".gvpie" / "worktrees" / "t1"
    path.parent.mkdir(parents=True)
    git(repo, "worktree", "add", "-q", "--detach", str(path), "HEAD")
    return path


def _marker() -> str:
    """A sleep argument no other process has, to find leftovers by their command line."""
    return f"3000.{uuid.uuid4().int % 10**9:09d}"


def _running(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes() == f"sleep\0{marker}\0".encode():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


@pytest.fixture
def no_leftovers():
    """Markers whose processes must be gone afterwards; kills any that are not, so a failure leaves no mess."""
    markers: list[str] = []
    yield markers
    for marker in markers:
        for pid in _running(marker):
            os.kill(pid, signal.SIGKILL)


def _listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(5)
    accepted = []

    def accept():
        try:
            accepted.append(server.accept()[0])
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return server, thread, accepted


# -- what the sandbox stops ------------------------------------------------------------------


@needs_bwrap
def test_writing_to_the_home_directory_fails(tmp_path):
    target = Path.home() / f".gvpie-sandbox-test-{uuid.uuid4().hex}"
    try:
        result = run_command(f"echo leaked > {target}", tmp_path, 30, sandbox=open_sandbox("on"))
        assert not result.passed
        assert "Read-only file system" in result.output
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@needs_bwrap
def test_root_cannot_remount_the_filesystem_writable(tmp_path):
    target = Path.home() / f".gvpie-sandbox-test-{uuid.uuid4().hex}"
    try:
        run_command(f"mount -o remount,rw,bind / ; echo leaked > {target}", tmp_path, 30, sandbox=open_sandbox("on"))
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@needs_bwrap
def test_no_network_by_default_and_allowed_when_asked(tmp_path):
    connect = f"{sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', {{port}}), timeout=3)\""
    server, thread, accepted = _listener()
    try:
        result = run_command(connect.format(port=server.getsockname()[1]), tmp_path, 30, sandbox=open_sandbox("on"))
        server.close()
        thread.join()
        assert not result.passed
        assert not accepted, "the server must see no connection"
    finally:
        server.close()

    server, thread, accepted = _listener()
    try:
        sandbox = open_sandbox("on", network=True)
        assert "network allowed" in sandbox.describe()
        result = run_command(connect.format(port=server.getsockname()[1]), tmp_path, 30, sandbox=sandbox)
        thread.join()
        assert result.passed, result.output
        assert accepted
    finally:
        server.close()
        for conn in accepted:
            conn.close()


@needs_bwrap
@pytest.mark.parametrize("detach", ["setsid sleep {m} &", "( ( sleep {m} & ) & )",
                                    "nohup sleep {m} >/dev/null 2>&1 & disown", "( setsid sleep {m} & ) &"])
def test_detached_processes_do_not_outlive_the_command(tmp_path, detach, no_leftovers):
    marker = _marker()
    no_leftovers.append(marker)
    # The command checks its child really is running before it returns, so the test can fail.
    pattern = marker.replace(".", "[.]")
    command = (f"{detach.format(m=marker)}\nsleep 0.3\n"
               f"for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -cx 'sleep {pattern} '")
    result = run_command(command, tmp_path, 30, sandbox=open_sandbox("on"))
    assert result.passed and result.output.strip() == "1", result.output
    assert _running(marker) == []


@needs_bwrap
def test_timeout_and_stop_kill_everything_inside(tmp_path, no_leftovers):
    marker = _marker()
    no_leftovers.append(marker)
    sandbox = open_sandbox("on")
    result = run_command(f"setsid sleep {marker} & sleep 60", tmp_path, timeout=1, sandbox=sandbox)
    assert result.timed_out and _running(marker) == []
    result = run_command(f"setsid sleep {marker} & sleep 60", tmp_path, should_stop=lambda: True, stop_grace=0.3,
                         sandbox=sandbox)
    assert result.stopped and _running(marker) == []


# -- what still works inside ----------------------------------------------------------------


@needs_bwrap
def test_worktree_is_writable_tmp_is_private_and_git_works(worktree, tmp_path):
    private = Path("/tmp") / f"gvpie-sandbox-test-{uuid.uuid4().hex}"
    main_repo = tmp_path / "repo"
    command = (f"echo new > new.txt && echo 2 >> calc.py && echo inside > {private} && cat {private} && "
               f"git status --short && git diff --stat && ! touch {main_repo}/.git/escaped")
    result = run_command(command, worktree, 30, sandbox=open_sandbox("on"))
    assert result.passed, result.output
    assert "?? new.txt" in result.output and " M calc.py" in result.output
    assert (worktree / "new.txt").read_text() == "new\n"
    assert not private.exists()
    assert not (main_repo / ".git" / "escaped").exists()


@needs_bwrap
def test_a_real_pytest_suite_passes_in_the_sandbox(worktree):
    outside = Path("/tmp") / f"gvpie-sandbox-test-{uuid.uuid4().hex}"
    (worktree / "test_x.py").write_text(
        "import multiprocessing, subprocess, pathlib\n\n"
        "def test_x(tmp_path):\n"
        "    (tmp_path / 'f').write_text('ok')\n"
        "    pathlib.Path('where.txt').write_text(str(tmp_path))\n"
        f"    pathlib.Path({str(outside)!r}).write_text('private')\n"
        "    assert multiprocessing.Lock()\n"
        "    assert subprocess.run(['git', 'status', '--short'], capture_output=True).returncode == 0\n")
    result = run_command(f"{sys.executable} -m pytest -q", worktree, 120, sandbox=open_sandbox("on"))
    assert result.passed, result.output
    assert "1 passed" in result.output
    inner_tmp = Path((worktree / "where.txt").read_text())
    assert not (inner_tmp / "f").exists()
    assert not outside.exists()


# -- choosing the mode ------------------------------------------------------------------------


def test_off_runs_unwrapped(tmp_path):
    sandbox = open_sandbox("off")
    assert not sandbox.active and sandbox.describe().startswith("sandbox: off")
    assert sandbox.wrap(["bash", "-c", "true"], tmp_path) == ["bash", "-c", "true"]
    outside = tmp_path / "outside"
    (tmp_path / "work").mkdir()
    assert run_command(f"touch {outside}", tmp_path / "work", 30, sandbox=sandbox).passed
    assert outside.exists()


def test_on_without_bubblewrap_raises_and_auto_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(sandbox_module, "BWRAP", "gvpie-no-such-bwrap")
    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        open_sandbox("on")
    with caplog.at_level(logging.WARNING, logger="auto_gvpie.sandbox"):
        first, second = open_sandbox("auto"), open_sandbox("auto")
    assert not first.active and first == second
    assert first.describe() == ("sandbox: off (bubblewrap not found; install the bubblewrap package "
                                "(apt-get install bubblewrap))")
    assert len([r for r in caplog.records if "without a sandbox" in r.getMessage()]) == 1


def test_a_bubblewrap_that_cannot_start_counts_as_missing(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox_module, "BWRAP", str(fake))
    sandbox = open_sandbox("auto")
    assert not sandbox.active
    assert "No permissions to create new namespace" in sandbox.describe()
    with pytest.raises(SandboxError, match="--sandbox off"):
        open_sandbox("on")


@needs_bwrap
def test_auto_is_on_where_bubblewrap_works():
    sandbox = open_sandbox("auto")
    assert sandbox.active
    assert sandbox.describe().startswith("sandbox: on (bubblewrap ")
    assert "no network" in sandbox.describe()


def test_settings(tmp_path):
    (tmp_path / "gvpie.toml").write_text("sandbox_network = true\n")
    settings = load_settings({"home": str(tmp_path)}, env={"GVPIE_SANDBOX": "on"})
    assert settings.sandbox == "on" and settings.sandbox_network is True
    assert load_settings({"home": str(tmp_path)}, env={}).sandbox == "auto"
    with pytest.raises(ConfigError, match="auto, on, off"):
        load_settings({"home": str(tmp_path)}, env={"GVPIE_SANDBOX": "sometimes"})


@needs_bwrap
def test_tools_under_tmp_stay_visible_behind_the_private_tmp(tmp_path, monkeypatch):
    """A checkout and its venv under /tmp (CI clones there): the private /tmp must not hide the
    interpreter or the PATH entries the commands run."""
    tools = tmp_path / "venv" / "bin"
    tools.mkdir(parents=True)
    tool = tools / "mytool"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    result = run_command("mytool && touch made-here", work, 30, sandbox=open_sandbox("on"))
    assert result.passed and "tool ran" in result.output, result.output
    assert (work / "made-here").exists()
    blocked = run_command(f"touch {tools}/written", work, 30, sandbox=open_sandbox("on"))
    assert not blocked.passed and not (tools / "written").exists()  # shown read-only
