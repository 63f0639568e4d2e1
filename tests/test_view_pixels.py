"""view_pixels.py end to end: the real script in a subprocess, run from a foreign directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auto_gvpie.pixels import parse_program, render

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "auto_gvpie" / "view_pixels.py"
BOOT = ROOT / "examples" / "pixels" / "boot_screen.json"


def view(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def pixel_doc(name: str, width: int = 16, height: int = 8, n_ops: int = 2) -> dict:
    ops = [{"op": "FILL", "color": [0, 0, 80]}] + [{"op": "SET", "x": i, "y": 0, "color": "#ffffff"}
                                                  for i in range(n_ops - 1)]
    return {"kind": "pixel_program", "version": 1, "name": name, "canvas": {"width": width, "height": height},
            "ops": ops}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with two pixel artifacts, one attempt file, one code patch and one unrelated JSON."""
    home = tmp_path / "home"
    art = home / "artifacts"
    art.mkdir(parents=True)
    (home / "auto_tasks.json").write_text(json.dumps([
        {"id": "draw-logo", "title": "Draw the logo", "kind": "pixel"},
        {"id": "boot-screen", "title": "Render a boot screen", "kind": "pixel"},
        {"id": "fix-add", "title": "Fix add", "kind": "code"}]))
    (art / "draw-logo.json").write_text(json.dumps(pixel_doc("logo", 32, 16, 4)))
    (art / "boot-screen.json").write_text(BOOT.read_text())
    (art / "boot-screen.attempt-1.json").write_text(json.dumps(pixel_doc("attempt", 8, 8)))
    (art / "fix-add.patch").write_text("--- a/x\n+++ b/x\n")
    (art / "notes.json").write_text(json.dumps({"hello": "world"}))
    for i, name in enumerate(["boot-screen.attempt-1.json", "draw-logo.json", "notes.json", "boot-screen.json"]):
        os.utime(art / name, (1_700_000_000 + i * 60, 1_700_000_000 + i * 60))
    return home


def test_file_to_enlarged_png_from_another_directory(tmp_path: Path):
    out = tmp_path / "boot.png"
    proc = view("--file", str(BOOT), "--png", str(out), "--scale", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = render(parse_program(BOOT.read_bytes()))
    got = np.asarray(Image.open(out).convert("RGBA"))
    assert got.shape == (64 * 3, 64 * 3, 4) and np.array_equal(got[1::3, 2::3], expected)
    assert f"wrote {out}" in proc.stdout


def test_ascii_preview_is_the_default_output(tmp_path: Path):
    proc = view("--file", str(BOOT), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header, *art = proc.stdout.rstrip("\n").split("\n")
    assert header == f"{BOOT}: boot_screen, 64x64, 10 ops"
    assert 20 <= len(art) <= 40 and max(len(line) for line in art) <= 80
    assert any("@" in line or "#" in line or "+" in line for line in art)


def test_json_output_is_one_object(tmp_path: Path):
    out = tmp_path / "o.png"
    proc = view("--file", str(BOOT), "--json", "--ascii", "--png", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["name"] == "boot_screen" and result["ops"] == 10 and result["width"] == 64
    assert result["png"] == str(out) and out.is_file() and result["ascii"].count("\n") >= 20


def test_invalid_program_exits_2_with_the_validator_message(tmp_path: Path):
    bad = tmp_path / "bad.json"
    doc = pixel_doc("bad")
    doc["ops"].append({"op": "RECT", "x": 0, "y": 0, "width": 0, "height": 3, "color": "#fff000"})
    bad.write_text(json.dumps(doc))
    proc = view("--file", str(bad), "--png", str(tmp_path / "never.png"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: ops[2].width: must be > 0"
    assert "Traceback" not in proc.stderr and not (tmp_path / "never.png").exists()
    as_json = view("--file", str(bad), "--json", cwd=tmp_path)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout) == {"error": f"{bad}: ops[2].width: must be > 0", "source": str(bad),
                                          "path": "ops[2].width", "rule": "must be > 0"}


@pytest.mark.parametrize("content, message", [
    ('{"kind": "pixel_program",\n "version": 1,, }', "$: invalid JSON at line 2 column 15"),
    ('{"kind": "pixel_program", "version": 1, "canvas": {"width": 5000, "height": 1}, "ops": []}',
     "canvas.width: at most 4096"),
    ('{"task_id": "t", "program": {"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1},'
     ' "ops": [{"op": "BLUR", "color": [0, 0, 0]}]}}', 'ops[0].op: unknown op "BLUR"'),
])
def test_bad_files_exit_2_naming_the_problem(tmp_path: Path, content: str, message: str):
    path = tmp_path / "p.json"
    path.write_text(content)
    proc = view("--file", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {path}: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr


PROGRAM_HEAD = '{"kind": "pixel_program", "version": 1, "canvas": {"width": 8, "height": 8}, "ops": '
FILLS = ('{"kind": "pixel_program", "version": 1, "canvas": {"width": 4096, "height": 4096}, "ops": ['
         + ", ".join(['{"op": "FILL", "color": [1, 2, 3, 4]}'] * 10000) + "]}")
HOSTILE_FILES = [  # content, expected message after "error: FILE: ", line and column (None: a JSON path)
    ("[" * 100_000, "$: invalid JSON at line 1 column 513: nested deeper than 512 levels", (1, 513)),
    ('{"ops": [' + "[" * 100_000, "$: invalid JSON at line 1 column 520: nested deeper than 512 levels", (1, 520)),
    (PROGRAM_HEAD + '\n[{"op": "SET", "x": ' + "9" * 5000 + ', "y": 0, "color": [1, 2, 3]}]}',
     "$: invalid JSON at line 2 column 21: a number of 5000 characters (at most 100)", (2, 21)),
    (PROGRAM_HEAD + '[{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "a\\ud800", "color": [1, 2, 3]}]}',
     "ops[0].text: must not contain unpaired surrogates", None),
    (PROGRAM_HEAD + '[{"op": "SET", "x": NaN, "y": 0, "color": [1, 2, 3]}]}',
     "$: invalid JSON at line 1 column 105: NaN is not valid JSON", (1, 105)),
    ('{"task_id": "t", "program": ' + PROGRAM_HEAD + '[{"op": "SET", "x": 1e999, "y": 0, "color": [1, 2, 3]}]}}',
     "$: invalid JSON at line 1 column 133: the number 1e999 is too large", (1, 133)),
    (FILLS, "ops: render cost 1,342,177,280,000 exceeds the limit of 100,000,000,000 (weighted pixel writes; "
            "most of it: 10,000 translucent FILL ops, 1,342,177,280,000)", None),
    ('{"task_id": "t", "program": ' + FILLS + "}", "ops: render cost 1,342,177,280,000 exceeds", None),
]


@pytest.mark.parametrize("content, message, where", HOSTILE_FILES, ids=[m[:50] for _, m, _ in HOSTILE_FILES])
def test_hostile_files_exit_2_with_the_file_and_location(tmp_path: Path, content: str, message: str, where):
    path = tmp_path / "hostile.json"
    path.write_text(content, encoding="utf-8")
    proc = view("--file", str(path), "--png", str(tmp_path / "never.png"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {path}: {message}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "never.png").exists()
    as_json = view("--file", str(path), "--json", cwd=tmp_path)
    assert as_json.returncode == 2 and "Traceback" not in as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["source"] == str(path) and report["error"].startswith(f"{path}: {message}")
    if where is None:
        assert report["path"] == message.split(":")[0] and "line" not in report
    else:
        assert report["path"] == "$" and (report["line"], report["column"]) == where


def test_oversized_file_is_refused_by_size_before_reading(tmp_path: Path):
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.truncate(61_000_000)  # sparse: no disk, no reading
    proc = view("--file", str(path), "--json", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout) == {
        "error": f"{path}: $: the program is 61,000,000 bytes; at most 4,000,000", "source": str(path),
        "path": "$", "rule": "the program is 61,000,000 bytes; at most 4,000,000"}


def test_directory_and_non_utf8_files_exit_2(tmp_path: Path):
    proc = view("--file", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == f"error: {tmp_path}: is a directory, not a pixel program file\n"
    as_json = view("--file", str(tmp_path), "--json", cwd=tmp_path)
    assert as_json.returncode == 2 and str(tmp_path) in json.loads(as_json.stdout)["error"]
    latin = tmp_path / "latin1.json"
    latin.write_bytes('{"kind": "pixel_program",\n "name": "caf\u00e9"}'.encode("latin-1"))
    proc = view("--file", str(latin), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {latin}: $: invalid JSON: not UTF-8 text (invalid continuation byte at "
                                  f"line 2, byte 14)")


def test_byte_order_mark_is_accepted(tmp_path: Path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + BOOT.read_bytes())
    proc = view("--file", str(path), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == "boot_screen"


def test_list_skips_hostile_and_oversized_artifacts(home: Path, tmp_path: Path):
    (home / "artifacts" / "deep.json").write_text("[" * 100_000)
    (home / "artifacts" / "digits.json").write_text('{"kind": "pixel_program", "n": ' + "9" * 5000 + "}")
    with (home / "artifacts" / "huge.json").open("wb") as fh:
        fh.truncate(61_000_000)
    (home / "artifacts" / "costly.json").write_text(FILLS)
    proc = view("--list", "--json", "--home", str(home), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    rows = {row["id"]: row for row in json.loads(proc.stdout)["artifacts"]}
    assert set(rows) == {"boot-screen", "draw-logo", "costly"}
    assert rows["costly"]["error"].startswith("ops: render cost 1,342,177,280,000 exceeds")


def test_artifact_record_wrapping_a_program_is_shown(tmp_path: Path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"task_id": "t1", "program": pixel_doc("wrapped", 10, 4, 3)}))
    proc = view("--file", str(path), "--json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["name"] == "wrapped"


def test_missing_file_and_bad_scale_are_usage_errors(tmp_path: Path):
    proc = view("--file", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert proc.returncode == 2 and "nope.json" in proc.stderr and "Traceback" not in proc.stderr
    proc = view("--file", str(BOOT), "--png", str(tmp_path / "x.png"), "--scale", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--scale" in proc.stderr
    proc = view("--file", str(BOOT), "--png", str(tmp_path / "x.png"), "--scale", "600", cwd=tmp_path)
    assert proc.returncode == 2 and "--scale" in proc.stderr and "Traceback" not in proc.stderr


def test_list_shows_pixel_artifacts_newest_first(home: Path, tmp_path: Path):
    proc = view("--list", "--home", str(home), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip("\n").split("\n")
    assert lines[0].split() == ["id", "name", "task", "size", "ops", "date"]
    assert len(lines) == 3  # attempt files, patches and non-program JSON are left out
    assert lines[1].startswith("boot-screen") and "Render a boot screen" in lines[1] and "64x64" in lines[1]
    assert lines[2].startswith("draw-logo") and "Draw the logo" in lines[2] and "32x16" in lines[2]
    assert lines[2].split()[-3] == "4"  # ops column, before the date and time
    rows = json.loads(view("--list", "--json", "--home", str(home), cwd=tmp_path).stdout)["artifacts"]
    assert [(r["id"], r["name"], r["task"], r["width"], r["height"], r["ops"]) for r in rows] == [
        ("boot-screen", "boot_screen", "Render a boot screen", 64, 64, 10),
        ("draw-logo", "logo", "Draw the logo", 32, 16, 4)]


def test_latest_uses_the_newest_artifact_and_home_defaults_to_cwd(home: Path):
    proc = view("--latest", "--json", cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["source"] == str(Path("artifacts") / "boot-screen.json")
    os.utime(home / "artifacts" / "draw-logo.json", None)  # touched now: newest
    proc = view("--home", str(home), cwd=home.parent)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{home / 'artifacts' / 'draw-logo.json'}: logo, 32x16")


def test_latest_falls_back_to_files_when_memory_has_nothing(home: Path):
    (home / "lancedb").mkdir()
    proc = view("--latest", "--json", "--home", str(home), cwd=home.parent)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == "boot_screen"


def test_latest_and_list_in_an_empty_home(tmp_path: Path):
    proc = view("--latest", cwd=tmp_path)
    assert proc.returncode == 2 and "no pixel artifacts" in proc.stderr
    proc = view("--list", cwd=tmp_path)
    assert proc.returncode == 0 and "no pixel artifacts" in proc.stdout


def test_gpu_with_a_missing_runner_binary_says_so(tmp_path: Path):
    proc = view("--file", str(BOOT), "--gpu", "--json", cwd=tmp_path,
                env={"GVPIE_RUNNER": str(tmp_path / "no-such-runner")})
    assert proc.returncode == 1
    assert "GVPIE_RUNNER=" in json.loads(proc.stdout)["gpu_error"]
    assert "is not a file" in view("--file", str(BOOT), "--gpu", cwd=tmp_path,
                                   env={"GVPIE_RUNNER": str(tmp_path / "no-such-runner")}).stderr


def test_source_flags_are_exclusive(tmp_path: Path):
    proc = view("--file", str(BOOT), "--list", cwd=tmp_path)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr


def _runner_built() -> bool:
    from auto_gvpie.pixels import gpu
    try:
        return gpu.find_runner() is not None
    except gpu.GPUError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _runner_built(), reason="no built gvpie-runner")
def test_gpu_render_matches_the_cpu_render(tmp_path: Path):
    proc = view("--file", str(BOOT), "--gpu", "--png", str(tmp_path / "cpu.png"), "--json", cwd=tmp_path)
    result = json.loads(proc.stdout)
    if "gpu_error" in result:
        pytest.skip(f"no usable GPU adapter here: {result['gpu_error']}")
    assert proc.returncode == 0 and result["gpu_differing_pixels"] == 0
    assert (tmp_path / "cpu.gpu.png").is_file()
