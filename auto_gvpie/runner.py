"""Runs the user's own test commands (never anything the LLM wrote) in a worktree.

Each command runs under bash in its own process group, so a timeout or a stop
kills everything it started; output is captured and capped, keeping head and tail.
With a sandbox (see sandbox.py) the command also runs in its own PID namespace,
so even what left the process group dies when the command ends.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from auto_gvpie.sandbox import Sandbox

log = logging.getLogger(__name__)

HEAD_CHARS = 4_000
TAIL_CHARS = 12_000


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int | None  # None when killed
    duration_s: float
    output: str  # stdout and stderr interleaved, capped
    timed_out: bool = False
    stopped: bool = False

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


class _CappedBuffer:
    """Keeps the first HEAD_CHARS and the last TAIL_CHARS of a stream."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = HEAD_CHARS - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > TAIL_CHARS:
            self.dropped += len(self.tail) - TAIL_CHARS
            del self.tail[: len(self.tail) - TAIL_CHARS]

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes of output left out ...]\n" if self.dropped else ""
        return (bytes(self.head).decode("utf-8", "replace") + middle + bytes(self.tail).decode("utf-8", "replace"))


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def run_command(command: str, cwd: Path, timeout: float = 300.0, *, env: dict[str, str] | None = None,
                should_stop: Callable[[], bool] | None = None, stop_grace: float = 10.0,
                sandbox: Sandbox | None = None) -> CommandResult:
    """Run `command` with bash in `cwd`, inside `sandbox` when given. When `should_stop()` turns true
    the command gets `stop_grace` seconds to finish before its process group is killed."""
    argv = ["bash", "-c", command]
    if sandbox is not None:
        argv = sandbox.wrap(argv, cwd)
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})})
    buffer = _CappedBuffer()

    def pump() -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            buffer.add(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = stopped = False
    stop_deadline = None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now - start > timeout:
                timed_out = True
                _kill_group(proc, grace=2.0)
                break
            if should_stop is not None and stop_deadline is None and should_stop():
                stop_deadline = now + stop_grace
            if stop_deadline is not None and now > stop_deadline:
                stopped = True
                _kill_group(proc, grace=2.0)
                break
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        else:
            # The command is done; make sure nothing it left in the background keeps the pipe open.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    except BaseException:
        # Interrupted (Ctrl-C, a forced stop): the command must not outlive us in a removed worktree.
        _kill_group(proc, grace=0.5)
        raise
    reader.join(timeout=5)
    duration = time.monotonic() - start
    output = buffer.text()
    if timed_out:
        output += f"\n[killed: the command ran longer than its {timeout:g} s timeout]"
    result = CommandResult(command, None if (timed_out or stopped) else proc.returncode, duration, output,
                           timed_out, stopped)
    log.info("command %r exit=%s in %.2fs", command, result.exit_code, duration)
    return result
