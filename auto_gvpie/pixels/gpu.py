"""The GPU runner (`rust_runner/`, binary `gvpie-runner`): find it, build it, run it.

`render_gpu(program, out_png)` executes a pixel program on the GPU and returns
the runner's JSON report (adapter, canvas, op count, stage timings in ms).
The runner validates programs with the same rules as `program.py` and must
produce the CPU renderer's pixels exactly (docs/pixel_programs.md).

Where the binary is looked for, in order: `$GVPIE_RUNNER`,
`$CARGO_TARGET_DIR/release/gvpie-runner`, `rust_runner/target/release/gvpie-runner`,
`~/.cache/gvpie-target/release/gvpie-runner` (the target folder `.ci/gpu_setup.sh`
and `build_runner` use by default, outside the checkout so rebuilds stay incremental).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import numpy as np
from PIL import Image

from .program import PixelProgram

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CRATE_DIR = REPO_ROOT / "rust_runner"
BINARY_NAME = "gvpie-runner"
DEFAULT_TARGET_DIR = Path.home() / ".cache" / "gvpie-target"
RENDER_TIMEOUT_S = 600

ProgramSource = Union[PixelProgram, dict, str, os.PathLike]


class GPUError(RuntimeError):
    """The GPU path could not produce an image."""


class RunnerUnavailable(GPUError):
    """No runner binary, and it cannot be built here; the message says how to get one."""


class RunnerFailed(GPUError):
    """The runner ran and exited non-zero; `stderr` holds its explanation."""

    def __init__(self, message: str, returncode: int, stderr: str):
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class ProgramRejected(RunnerFailed):
    """The runner refused the program (exit 2): its message names the JSON path."""


def _target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or DEFAULT_TARGET_DIR)


def find_runner() -> Path | None:
    """The runner binary to use, or None when none is built. A GVPIE_RUNNER that is not a file is an error."""
    explicit = os.environ.get("GVPIE_RUNNER")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise RunnerUnavailable(f"GVPIE_RUNNER={explicit} is not a file")
        return path
    candidates = []
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release" / BINARY_NAME)
    candidates += [CRATE_DIR / "target" / "release" / BINARY_NAME, DEFAULT_TARGET_DIR / "release" / BINARY_NAME]
    return next((c for c in candidates if c.is_file()), None)


def build_runner(progress: Callable[[str], None] | None = None) -> Path:
    """`cargo build --release` of the crate, reporting each line cargo prints; returns the binary.

    The target folder is $CARGO_TARGET_DIR, else ~/.cache/gvpie-target. The first build
    compiles wgpu and takes minutes; later ones are incremental.
    """
    # rustup installs into ~/.cargo/bin, which non-login shells (CI) may not have on PATH.
    rustup_cargo = Path.home() / ".cargo" / "bin" / "cargo"
    cargo = shutil.which("cargo") or (str(rustup_cargo) if rustup_cargo.is_file() else None)
    if cargo is None:
        raise RunnerUnavailable(
            "the GPU runner is not built and cargo is not installed: install Rust (https://rustup.rs), then run "
            "`cargo build --release` in rust_runner/ (or bash .ci/gpu_setup.sh), or point GVPIE_RUNNER at a "
            "gvpie-runner binary")
    target = _target_dir()
    report = progress or (lambda line: logger.info("cargo: %s", line))
    env = {**os.environ, "CARGO_TARGET_DIR": str(target), "CARGO_TERM_COLOR": "never"}
    logger.info("building %s into %s", BINARY_NAME, target)
    proc = subprocess.Popen([cargo, "build", "--release", "--manifest-path", str(CRATE_DIR / "Cargo.toml")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    tail: list[str] = []
    for line in proc.stderr:
        line = line.rstrip()
        if line:
            report(line)
            tail = (tail + [line])[-40:]
    if proc.wait() != 0:
        raise RunnerFailed("cargo build of the GPU runner failed:\n" + "\n".join(tail), proc.returncode, "\n".join(tail))
    binary = target / "release" / BINARY_NAME
    if not binary.is_file():
        raise RunnerFailed(f"cargo build succeeded but {binary} is missing", 0, "")
    return binary


def ensure_runner(progress: Callable[[str], None] | None = None) -> Path:
    """The runner binary, built first when none is found."""
    return find_runner() or build_runner(progress)


def _run(args: list[str], runner: Path | None,
         progress: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
    binary = runner or ensure_runner(progress)
    try:
        proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    except OSError as exc:
        raise RunnerUnavailable(f"cannot start {binary}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise RunnerFailed(f"{binary} did not finish within {RENDER_TIMEOUT_S} s", -1, str(exc.stderr or "")) from exc
    if proc.returncode != 0:
        stderr = proc.stderr.strip()
        # Vulkan drivers may print their own chatter; the runner's explanation is in its own lines.
        own = [line for line in stderr.splitlines() if line.startswith(f"{BINARY_NAME}: ")]
        message = "\n".join(own) or stderr or f"{binary.name} exited with {proc.returncode}"
        error = ProgramRejected if proc.returncode == 2 else RunnerFailed
        raise error(message, proc.returncode, stderr)
    return proc


def adapters(runner: Path | None = None) -> list[dict[str, str]]:
    """What `gvpie-runner info` sees: [{name, backend, device_type, driver}]."""
    return json.loads(_run(["info", "--json"], runner).stdout)["adapters"]


def _program_file(program: ProgramSource, folder: Path, stem: str) -> Path:
    if isinstance(program, (str, os.PathLike)):
        return Path(program)
    document = program.to_json() if isinstance(program, PixelProgram) else program
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def render_gpu(program: ProgramSource, out_png: str | os.PathLike, *, runner: Path | None = None,
               adapter: str | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one program (a PixelProgram, a JSON-ready dict, or a path to a JSON file) on the GPU.

    Writes `out_png` and returns the runner's report. Without `runner`, the binary is
    found or built first (`progress` gets cargo's lines). Raises ProgramRejected for an
    invalid program, RunnerFailed/RunnerUnavailable when the runner cannot do it.
    """
    out = Path(out_png)
    with tempfile.TemporaryDirectory(prefix="gvpie-gpu-") as tmp:
        source = _program_file(program, Path(tmp), "program")
        args = ["render", str(source), "--out", str(out), "--json"] + (["--adapter", adapter] if adapter else [])
        report = json.loads(_run(args, runner, progress).stdout)
    logger.info("GPU render on %s: %s", report["adapter"]["name"], report["timings_ms"])
    return report


def render_gpu_many(programs: Iterable[ProgramSource], out_dir: str | os.PathLike, *,
                    runner: Path | None = None) -> list[dict[str, Any]]:
    """Render several programs in one runner process (one device setup); PNGs are out_dir/<i>.png.

    Returns one report per program, in order; the first invalid program stops the batch.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gvpie-gpu-") as tmp:
        paths = []
        for i, program in enumerate(programs):
            source = _program_file(program, Path(tmp), f"{i:05d}")
            if source.stem != f"{i:05d}":
                # Output names come from input stems: give every program a predictable one.
                source = Path(shutil.copy(source, Path(tmp) / f"{i:05d}.json"))
            paths.append(str(source))
        if not paths:
            return []
        proc = _run(["render", *paths, "--out-dir", str(out), "--json"], runner)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Decoded pixels as an H x W x 4 uint8 array (what `render.render` returns)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGBA"))
