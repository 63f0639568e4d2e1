"""The test runner: bash, timeouts that kill the whole process group, capped output."""

from __future__ import annotations

import os
import time

from auto_gvpie.runner import HEAD_CHARS, TAIL_CHARS, run_command


def test_exit_code_output_and_duration(tmp_path):
    result = run_command("echo out; echo err >&2; exit 3", tmp_path)
    assert result.exit_code == 3 and not result.passed
    assert "out" in result.output and "err" in result.output
    assert result.duration_s >= 0


def test_runs_in_the_given_directory(tmp_path):
    (tmp_path / "marker").write_text("here")
    assert run_command("cat marker", tmp_path).output == "here"


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    result = run_command(f"sleep 60 & echo $! > {pidfile}; wait", tmp_path, timeout=0.5)
    assert result.timed_out and result.exit_code is None
    assert "timeout" in result.output
    child = int(pidfile.read_text())
    time.sleep(0.2)
    try:
        os.kill(child, 0)
        alive = os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]
    except ProcessLookupError:
        alive = False
    assert not alive


def test_output_is_capped_keeping_head_and_tail(tmp_path):
    result = run_command("echo FIRST; head -c 200000 /dev/zero | tr '\\0' x; echo; echo LAST", tmp_path)
    assert result.output.startswith("FIRST")
    assert result.output.rstrip().endswith("LAST")
    assert "left out" in result.output
    assert len(result.output) < HEAD_CHARS + TAIL_CHARS + 200


def test_stop_request_gives_grace_then_kills(tmp_path):
    started = time.monotonic()
    result = run_command("sleep 30", tmp_path, should_stop=lambda: True, stop_grace=0.3)
    assert result.stopped and result.exit_code is None
    assert time.monotonic() - started < 10
