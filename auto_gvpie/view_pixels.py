"""Look at pixel programs: render one to PNG or ASCII, or list the pixel artifacts of a home.

    python auto_gvpie/view_pixels.py --latest --ascii
    python auto_gvpie/view_pixels.py --file examples/pixels/boot_screen.json --png out.png --scale 4
    python auto_gvpie/view_pixels.py --list

Exit codes: 0 shown; 1 the GPU run failed; 2 usage or input error (a missing,
unreadable or invalid program: the message names the file and the JSON path,
e.g. `ops[3].width: must be > 0`, or the line and column of a JSON syntax error).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python auto_gvpie/view_pixels.py` from any directory
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auto_gvpie.pixels import gpu
from auto_gvpie.pixels.program import (MAX_PROGRAM_BYTES, PixelProgram, ValidationError, decode_json,
                                       parse_program, size_error)
from auto_gvpie.pixels.render import ascii_preview, render, save_png
from auto_gvpie.inbox import InboxError, read_inbox

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("auto_gvpie.view_pixels")


class UsageError(Exception):
    """Bad flags or input; the message is shown as is and the exit code is 2."""


class InvalidProgram(UsageError):
    """The program at `source` breaks the spec; `error` names the JSON path and rule."""

    def __init__(self, source: Path, error: ValidationError):
        super().__init__(f"{source}: {error}")
        self.source = source
        self.error = error


@dataclass(frozen=True)
class ArtifactRow:
    id: str
    name: str
    task: str
    width: int | None
    height: int | None
    ops: int | None
    date: str
    path: str
    error: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="view_pixels.py", description="Render and inspect pixel programs.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", metavar="P", help="a pixel program, or an artifact JSON that holds one")
    source.add_argument("--latest", action="store_true", help="the newest pixel artifact (default)")
    source.add_argument("--list", action="store_true", help="table of pixel artifacts: id, name, task, size, ops, date")
    parser.add_argument("--png", metavar="OUT", help="write the rendered PNG here")
    parser.add_argument("--ascii", action="store_true", help="print an ASCII preview (default when no other output)")
    parser.add_argument("--json", action="store_true", help="one machine-readable JSON object on stdout")
    parser.add_argument("--scale", type=int, default=1, metavar="N", help="enlarge each pixel to N x N in the PNG")
    parser.add_argument("--width", type=int, default=80, metavar="COLS", help="ASCII preview width (default 80)")
    parser.add_argument("--gpu", action="store_true", help="also run the program on the GPU runner and compare")
    parser.add_argument("--home", default=".", metavar="DIR", help="where artifacts/ and lancedb/ live (default: .)")
    return parser


def _unwrap(obj: Any) -> Any:
    """An artifact record may hold the program under "program"; a bare program is used as is."""
    if isinstance(obj, dict) and "kind" not in obj and isinstance(obj.get("program"), dict):
        return obj["program"]
    return obj


def _read_document(path: Path) -> Any:
    """Decode a program file: its size is checked before it is read, every JSON problem is a
    ValidationError (path or line and column), an unreadable file a UsageError."""
    try:
        if path.is_dir():
            raise UsageError(f"{path}: is a directory, not a pixel program file")
        size = path.stat().st_size
        if size > MAX_PROGRAM_BYTES:
            raise size_error(size)
        with path.open("rb") as fh:  # read no more than the limit: a pipe or device has no size
            data = fh.read(MAX_PROGRAM_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PROGRAM_BYTES:
        raise ValidationError("$", f"the program is more than {MAX_PROGRAM_BYTES:,} bytes; at most "
                                   f"{MAX_PROGRAM_BYTES:,}")
    return decode_json(data)


def load_program(path: Path) -> PixelProgram:
    """Read and validate a program file (or an artifact record holding one)."""
    try:
        # Decoding keeps duplicate keys, so the validator rejects them in a wrapped program too.
        return parse_program(_unwrap(_read_document(path)))
    except ValidationError as exc:
        raise InvalidProgram(path, exc) from None


def _is_pixel_artifact(path: Path) -> bool:
    return path.suffix == ".json" and ".attempt-" not in path.name


def _task_titles(home: Path) -> dict[str, str]:
    try:
        return {task.id: task.title for task in read_inbox(home / "auto_tasks.json")}
    except (InboxError, OSError) as exc:
        log.debug("no task titles: %s", exc)
        return {}


def list_artifacts(home: Path) -> list[ArtifactRow]:
    """Pixel artifacts under <home>/artifacts, newest first (attempt files are left out)."""
    folder = home / "artifacts"
    if not folder.is_dir():
        return []
    titles = _task_titles(home)
    found: list[tuple[float, ArtifactRow]] = []
    for path in sorted(folder.iterdir()):
        if not _is_pixel_artifact(path):
            continue
        try:
            obj = _unwrap(_read_document(path))
        except (UsageError, ValidationError):  # unreadable or not JSON: not listed
            continue
        if not isinstance(obj, dict) or obj.get("kind") != "pixel_program":
            continue
        mtime = path.stat().st_mtime
        date = dt.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")
        task = titles.get(path.stem, "")
        try:
            program = parse_program(obj)
        except ValidationError as exc:
            row = ArtifactRow(path.stem, str(obj.get("name", "")), task, None, None, None, date, str(path), str(exc))
        else:
            row = ArtifactRow(path.stem, program.name, task, program.canvas.width, program.canvas.height,
                              len(program.ops), date, str(path))
        found.append((mtime, row))
    found.sort(key=lambda item: (item[0], item[1].id), reverse=True)
    return [row for _, row in found]


def _latest_from_memory(home: Path) -> Path | None:
    """The newest pixel artifact according to LanceDB memory, or None when memory cannot say."""
    if not (home / "lancedb").is_dir():
        return None
    from auto_gvpie.memory import Memory  # LanceDB loads only when there is memory to ask

    memory = Memory(home)  # a broken store answers None (and says why in the log); it never raises
    try:
        record = memory.latest_artifact(kind="pixel")
    finally:
        memory.close()
    if record is None:
        return None
    path = Path(record["path"]) if record.get("path") else home / "artifacts" / f"{record['task_id']}.json"
    path = path if path.is_absolute() else home / path
    return path if path.is_file() else None


def latest_artifact(home: Path) -> Path:
    path = _latest_from_memory(home)
    if path is not None:
        return path
    rows = list_artifacts(home)
    if not rows:
        raise UsageError(f"no pixel artifacts in {home / 'artifacts'}")
    return Path(rows[0].path)


def _print_table(rows: list[ArtifactRow]) -> None:
    header = ("id", "name", "task", "size", "ops", "date")
    lines = [header]
    for row in rows:
        size = f"{row.width}x{row.height}" if row.width else "invalid"
        ops = str(row.ops) if row.ops is not None else "-"
        lines.append((row.id, row.name, row.task[:40], size, ops, row.date))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _run_gpu(program: PixelProgram, out_png: Path, cpu_image: np.ndarray) -> dict[str, Any]:
    """Render on the GPU runner and count the pixels that differ from the CPU render (-1: other size)."""
    try:
        gpu.render_gpu(program, out_png)
    except gpu.GPUError as exc:
        return {"gpu_error": str(exc)}
    gpu_image = gpu.read_png(out_png)
    differing = int((gpu_image != cpu_image).any(axis=-1).sum()) if gpu_image.shape == cpu_image.shape else -1
    return {"gpu_png": str(out_png), "gpu_differing_pixels": differing}


def show(args: argparse.Namespace) -> int:
    home = Path(args.home)
    if args.list:
        rows = list_artifacts(home)
        if args.json:
            print(json.dumps({"artifacts": [asdict(row) for row in rows]}))
        elif rows:
            _print_table(rows)
        else:
            print(f"no pixel artifacts in {home / 'artifacts'}")
        return EXIT_OK
    path = Path(args.file) if args.file else latest_artifact(home)
    program = load_program(path)
    image = render(program)
    result: dict[str, Any] = {"source": str(path), "name": program.name, "width": program.canvas.width,
                              "height": program.canvas.height, "ops": len(program.ops)}
    if args.png:
        try:
            result["png"] = str(save_png(image, args.png, scale=args.scale))
        except ValueError as exc:
            raise UsageError(f"--scale: {exc}") from None
        except OSError as exc:
            raise UsageError(f"{args.png}: {exc.strerror or exc}") from None
    exit_code = EXIT_OK
    if args.gpu:
        out_png = Path(args.png).with_suffix(".gpu.png") if args.png else \
            Path(tempfile.mkdtemp(prefix="gvpie-gpu-")) / f"{path.stem}.png"
        result.update(_run_gpu(program, out_png, image))
        if result.get("gpu_differing_pixels") != 0:
            exit_code = EXIT_FAILED
    want_ascii = args.ascii or not (args.png or args.json or args.gpu)
    preview = ascii_preview(image, max_width=max(1, args.width)) if want_ascii else None
    if args.json:
        if preview is not None:
            result["ascii"] = preview
        print(json.dumps(result))
        return exit_code
    print(f"{path}: {program.name or '(unnamed)'}, {program.canvas.width}x{program.canvas.height}, "
          f"{len(program.ops)} ops")
    if preview is not None:
        print(preview)
    if "png" in result:
        print(f"wrote {result['png']}")
    if "gpu_png" in result:
        same = result["gpu_differing_pixels"] == 0
        print(f"gpu: wrote {result['gpu_png']}; "
              + ("identical to the CPU render" if same else f"differs from the CPU render "
                 f"({result['gpu_differing_pixels']} pixels; -1 means another size)"))
    if "gpu_error" in result:
        print(f"gpu: failed: {result['gpu_error']}", file=sys.stderr)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scale < 1:
        print("error: --scale must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        return show(args)
    except InvalidProgram as exc:
        if args.json:
            report = {"error": str(exc), "source": str(exc.source), "path": exc.error.path, "rule": exc.error.rule}
            if exc.error.line is not None:
                report.update(line=exc.error.line, column=exc.error.column)
            print(json.dumps(report))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
