"""Runs test commands (model-written code) under bubblewrap.

Inside: the whole filesystem read-only except the worktree, a private /tmp, no
network unless allowed, and a PID namespace, so whatever the command leaves
behind (setsid, double forks) dies with it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

BWRAP = "bwrap"  # the binary looked up on PATH; tests point it elsewhere
MODES = ("auto", "on", "off")
INSTALL_HINT = "install the bubblewrap package (apt-get install bubblewrap)"


class SandboxError(Exception):
    """`--sandbox on` was asked for but bubblewrap cannot be used here; the message says what to do."""


def _flags(network: bool) -> list[str]:
    flags = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
             # Tools that honour TMPDIR (pytest's tmp_path among them) must land in the private /tmp.
             "--setenv", "TMPDIR", "/tmp",
             "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if not network:
        flags.append("--unshare-net")
    if os.geteuid() == 0:
        # Root keeps its capabilities in the sandbox and could simply remount / read-write.
        flags += ["--cap-drop", "ALL"]
    return flags


def _git_common_dir(worktree: Path) -> Path | None:
    """A linked worktree's `.git` is a file pointing into the main repository, which may sit under the
    hidden /tmp; git inside the sandbox needs it (read-only is enough for status and diff)."""
    dot_git = worktree / ".git"
    if not dot_git.is_file():
        return None
    text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        return None
    gitdir = (worktree / text[len("gitdir:"):].strip()).resolve()
    commondir = gitdir / "commondir"
    if commondir.is_file():
        return (gitdir / commondir.read_text(encoding="utf-8").strip()).resolve()
    return gitdir


@dataclass(frozen=True)
class Sandbox:
    active: bool
    reason: str  # what --status shows in brackets
    network: bool = False
    binary: str = BWRAP

    def describe(self) -> str:
        """The one line `--status` prints."""
        return f"sandbox: {'on' if self.active else 'off'} ({self.reason})"

    def wrap(self, argv: list[str], cwd: Path, writable: Sequence[Path] = ()) -> list[str]:
        """`argv` as run inside the sandbox, with `cwd` and `writable` the only writable places."""
        if not self.active:
            return list(argv)
        cwd = Path(cwd).resolve()
        binds = []
        common = _git_common_dir(cwd)
        if common is not None and common.is_dir():
            binds += ["--ro-bind", str(common), str(common)]
        for path in _tools_under_tmp():
            binds += ["--ro-bind", str(path), str(path)]
        # Writable binds last, so they win over anything read-only above them.
        for path in (cwd, *(Path(p).resolve() for p in writable)):
            binds += ["--bind", str(path), str(path)]
        return [self.binary, *_flags(self.network), *binds, "--chdir", str(cwd), "--", *argv]


def _tools_under_tmp() -> list[Path]:
    """What the private /tmp would hide but commands need: this interpreter's environment (a venv
    in a checkout under /tmp) and the PATH entries there; shown read-only."""
    tmp = Path("/tmp").resolve()
    found: list[Path] = []
    for raw in (sys.prefix, sys.base_prefix, *os.environ.get("PATH", "").split(os.pathsep)):
        if not raw:
            continue
        path = Path(raw).resolve()
        if path.is_relative_to(tmp) and path != tmp and path.is_dir() and path not in found:
            found.append(path)
    return found


@functools.lru_cache(maxsize=None)
def _probe(binary: str, network: bool) -> tuple[str | None, str]:
    """(path to a working bwrap or None, version or why not); once per process."""
    path = shutil.which(binary)
    if path is None:
        return None, f"bubblewrap not found; {INSTALL_HINT}"
    try:
        proc = subprocess.run([path, *_flags(network), "--", "true"], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bubblewrap does not work here: {exc}"
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return None, f"bubblewrap does not work here: {detail}"
    return path, version or "bubblewrap"


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


def open_sandbox(mode: str = "auto", network: bool = False) -> Sandbox:
    """The sandbox for `mode` (auto | on | off); `on` raises SandboxError where bubblewrap does not work."""
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return Sandbox(False, "turned off by the sandbox setting", network)
    path, detail = _probe(BWRAP, network)
    if path is None:
        if mode == "on":
            raise SandboxError(f"sandbox: {detail}; or run with --sandbox off")
        _warn_once(f"test commands run without a sandbox: {detail} (--sandbox off silences this)")
        return Sandbox(False, detail, network)
    limits = "read-only filesystem, private /tmp, " + ("network allowed" if network else "no network")
    return Sandbox(True, f"{detail}; {limits}", network, path)
