"""The GPU runner (rust_runner/, real binary, real Vulkan device — lavapipe in CI)
must give exactly the CPU renderer's pixels and reject exactly the programs the
Python validator rejects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auto_gvpie.pixels import gpu
from auto_gvpie.pixels.program import ValidationError, parse_program
from auto_gvpie.pixels.render import render

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.programs import mixed_program  # noqa: E402
from test_pixels import EXAMPLES, INVALID, extreme_op, op_strategy  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def runner() -> Path:
    """A fresh build when cargo is here (incremental, seconds), else whatever binary is found."""
    found = gpu.find_runner()
    has_cargo = shutil.which("cargo") or (Path.home() / ".cargo" / "bin" / "cargo").is_file()
    if has_cargo and "GVPIE_RUNNER" not in os.environ:
        return gpu.build_runner()
    if found is None:
        pytest.skip("no gvpie-runner binary and no cargo to build one (install Rust, run bash .ci/gpu_setup.sh)")
    return found


def doc(ops: list[dict], width: int = 32, height: int = 32, **extra) -> dict:
    return {"kind": "pixel_program", "version": 1, "canvas": {"width": width, "height": height}, "ops": ops, **extra}


def assert_same_pixels(runner: Path, documents: list[dict], tmp_path: Path) -> list[dict]:
    """Render all documents in one runner process and compare each with the CPU renderer."""
    reports = gpu.render_gpu_many(documents, tmp_path, runner=runner)
    assert len(reports) == len(documents)
    for i, (document, report) in enumerate(zip(documents, reports)):
        expected = render(parse_program(document))
        got = gpu.read_png(report["out"])
        assert got.shape == expected.shape, f"program {i}"
        differing = np.argwhere((got != expected).any(axis=-1))
        assert len(differing) == 0, (
            f"program {i} ({document.get('name', '')}): {len(differing)} pixels differ, first (y, x) "
            f"{differing[:5].tolist()}: gpu {got[tuple(differing[0])].tolist()} "
            f"cpu {expected[tuple(differing[0])].tolist()}")
    return reports


def test_info_lists_an_adapter(runner):
    adapters = gpu.adapters(runner)
    assert adapters, "gvpie-runner info sees no adapter: install mesa-vulkan-drivers and libvulkan1"
    assert {"name", "backend", "device_type"} <= adapters[0].keys()


def test_report_has_adapter_canvas_and_stage_timings(runner, tmp_path):
    program = parse_program(EXAMPLES[0].read_text())
    report = gpu.render_gpu(program, tmp_path / "out.png", runner=runner)
    assert report["canvas"] == {"width": program.canvas.width, "height": program.canvas.height}
    assert report["n_ops"] == len(program.ops)
    assert report["adapter"]["name"] and report["adapter"]["backend"] and report["adapter"]["device_type"]
    for stage in ("parse", "binning", "upload", "compute", "readback", "png_encode", "total"):
        assert report["timings_ms"][stage] >= 0
    assert np.array_equal(gpu.read_png(tmp_path / "out.png"), render(program))


def test_examples_match(runner, tmp_path):
    assert_same_pixels(runner, [json.loads(p.read_text()) for p in EXAMPLES], tmp_path)


WHITE = [255, 255, 255]
HALF = [250, 40, 90, 128]


def edge_cases() -> list[dict]:
    """Hand-picked programs around every rule where two implementations could drift apart."""
    clip = [{"op": "FILL", "color": [20, 30, 40]}]
    for x, y in [(-3, 5), (29, 5), (10, -3), (10, 29), (-3, -3), (29, 29)]:
        clip.append({"op": "RECT", "x": x, "y": y, "width": 6, "height": 6, "color": HALF})
        clip.append({"op": "RECT", "x": x, "y": y, "width": 6, "height": 6, "fill": False, "color": WHITE})
    clip += [{"op": "CIRCLE", "cx": cx, "cy": cy, "r": 5, "fill": f, "color": [0, 255, 0, 200]}
             for cx, cy in [(0, 0), (31, 0), (0, 31), (31, 31), (-5, 16), (36, 16)] for f in (True, False)]
    clip += [{"op": "SET", "x": x, "y": y, "color": WHITE} for x, y in [(-1, 0), (32, 0), (0, -1), (0, 32), (31, 31)]]
    clip += [{"op": "WRITE_TEXT", "x": x, "y": y, "text": "Hg", "scale": 2, "color": WHITE}
             for x, y in [(-9, 8), (24, 8), (8, -9), (8, 26)]]

    centre = 16
    octants = [{"op": "LINE", "x1": centre, "y1": centre, "x2": centre + dx, "y2": centre + dy, "color": HALF}
               for dx, dy in [(15, 4), (4, 15), (-4, 15), (-15, 4), (-15, -4), (-4, -15), (4, -15), (15, -4),
                              (15, 0), (0, 15), (-15, 0), (0, -15), (13, 13), (-13, 13), (13, -13), (-13, -13),
                              (2, 1), (2, -1), (-2, 1), (1, 2), (0, 0)]]
    long_lines = [{"op": "LINE", "x1": a, "y1": b, "x2": c, "y2": d, "color": WHITE}
                  for a, b, c, d in [(-8192, -8192, 8192, 8192), (-8192, 8192, 8192, -8192), (-8192, 3, 8192, 20),
                                     (5, -8192, 9, 8192), (-8000, 31, 40, 0), (8192, -7000, 0, 17)]]
    circles = [{"op": "CIRCLE", "cx": 16, "cy": 16, "r": r, "fill": f, "color": HALF}
               for r in (0, 1, 2, 3, 7) for f in (True, False)]
    circles += [{"op": "CIRCLE", "cx": -8192 + 16, "cy": 16, "r": 8192 - 8, "fill": False, "color": WHITE},
                {"op": "CIRCLE", "cx": 16, "cy": 8192, "r": 8192 - 20, "fill": False, "color": WHITE},
                {"op": "CIRCLE", "cx": 8192, "cy": 8192, "r": 8192, "fill": True, "color": [0, 0, 255, 77]}]
    alpha = [{"op": "FILL", "color": [200, 100, 50]}]
    alpha += [{"op": "RECT", "x": i % 8 * 4, "y": i // 8 * 4, "width": 4, "height": 4, "color": [255 - i, i * 3, 7, a]}
              for i, a in enumerate([0, 1, 2, 127, 128, 129, 253, 254, 255, 64, 191, 3] * 4)]
    alpha += [{"op": "FILL", "color": [9, 250, 130, 1]}, {"op": "FILL", "color": [255, 255, 255, 127]}]
    text = [{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "Az~ é\n\t☃😀\x7f", "color": WHITE},
            {"op": "WRITE_TEXT", "x": -3, "y": 9, "text": "gjpqy,", "scale": 1, "color": [255, 0, 0, 150]},
            {"op": "WRITE_TEXT", "x": 1, "y": 17, "text": "#@", "scale": 3, "color": HALF},
            {"op": "WRITE_TEXT", "x": -100, "y": -100, "text": "W", "scale": 16, "color": WHITE},
            {"op": "WRITE_TEXT", "x": -8192, "y": 20, "text": "M" * 256, "scale": 4, "color": WHITE},
            {"op": "WRITE_TEXT", "x": 3, "y": 3, "text": "", "color": WHITE}]
    # An opaque cover mid-program: earlier ops vanish under it, later translucent ones must still blend.
    occlusion = [{"op": "CIRCLE", "cx": 16, "cy": 16, "r": 12, "color": WHITE},
                 {"op": "RECT", "x": 0, "y": 0, "width": 20, "height": 20, "color": [1, 2, 3]},
                 {"op": "CIRCLE", "cx": 15, "cy": 15, "r": 14, "color": [10, 20, 30]},
                 {"op": "LINE", "x1": 0, "y1": 31, "x2": 31, "y2": 0, "color": HALF},
                 {"op": "FILL", "color": [0, 0, 0, 255]},
                 {"op": "RECT", "x": 5, "y": 5, "width": 30, "height": 3, "color": HALF}]
    return [
        doc(clip, name="clipping at every edge"),
        doc(octants, name="lines in every octant"),
        doc(long_lines, name="lines at the coordinate limits"),
        doc(circles, name="circles small and huge"),
        doc(alpha, name="alpha rounding"),
        doc(text, name="text scaled, clipped, unknown characters"),
        doc(occlusion, name="opaque cover"),
        doc(octants + circles, 37, 23, name="canvas not a multiple of the tile size"),
        doc(clip, 1, 1, name="one pixel"),
        doc(octants, 300, 1, name="one row"),
        doc(long_lines + circles, 1, 300, name="one column"),
        doc([], 5, 3, name="no ops"),
    ]


def test_edge_cases_match(runner, tmp_path):
    assert_same_pixels(runner, edge_cases(), tmp_path)


def test_seeded_mixed_programs_match(runner, tmp_path):
    programs = [mixed_program(w, h, n, seed) for seed, (w, h, n) in
                enumerate([(64, 64, 200), (97, 41, 300), (128, 128, 500), (16, 200, 100), (255, 17, 150)] * 3)]
    assert_same_pixels(runner, programs, tmp_path)


def test_larger_tiles_match(runner, tmp_path):
    """When tile lists would overflow the device's binding limit, tiles grow; force that here."""
    document = mixed_program(200, 150, 400, seed=11)
    source, png = tmp_path / "program.json", tmp_path / "out.png"
    source.write_text(json.dumps(document))
    proc = subprocess.run([str(runner), "render", str(source), "--out", str(png), "--json",
                           "--max-tile-entries", "1500"], capture_output=True, text=True, check=True)
    report = json.loads(proc.stdout)
    assert report["tile_size"] > 16 and report["tile_entries"] <= 1500
    assert np.array_equal(gpu.read_png(png), render(parse_program(document)))


def test_largest_canvas_matches(runner, tmp_path):
    # 4096 x 4096 is 64 MiB of pixels: storage-binding and dispatch limits are exercised here.
    assert_same_pixels(runner, [mixed_program(4096, 4096, 300, seed=7)], tmp_path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 48), h=st.integers(1, 48), ops=st.lists(op_strategy, max_size=12))
def test_generated_programs_match(runner, tmp_path, w, h, ops):
    assert_same_pixels(runner, [doc(ops, w, h, palette={"p0": [10, 200, 30, 100]})], tmp_path)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 64), h=st.integers(1, 64), ops=st.lists(extreme_op, max_size=6),
       colours=st.lists(st.lists(st.integers(0, 255), min_size=4, max_size=4), min_size=6, max_size=6))
def test_generated_programs_at_the_limits_match(runner, tmp_path, w, h, ops, colours):
    assert_same_pixels(runner, [doc([{**op, "color": c} for op, c in zip(ops, colours)], w, h)], tmp_path)


def python_verdict(text: str) -> str | None:
    try:
        parse_program(text)
    except ValidationError as exc:
        return str(exc)
    return None


def runner_verdict(runner: Path, text: str, tmp_path: Path) -> tuple[int, str]:
    source = tmp_path / "program.json"
    source.write_text(text, encoding="utf-8")
    try:
        gpu.render_gpu(source, tmp_path / "out.png", runner=runner)
    except gpu.ProgramRejected as exc:
        return exc.returncode, exc.stderr
    return 0, ""


INVALID_TEXTS = [json.dumps(document) for document, _ in INVALID] + [
    '{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "width": 2, "height": 1}, "ops": []}',
    '{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1}, "ops": [], '
    '"metadata": {"a": {"b": 1, "b": 2}}}',
    '{"kind": "pixel_program", "version": 1,\n "canvas": }',
    '{"kind": "pixel_program", "version": 1, "canvas": {"width": 1e1, "height": 1}, "ops": []}',
    '{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1}, "ops": [], "metadata": {"x": 1e400}}',
    '{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1}, '
    '"ops": [{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "\\udc00", "color": [1,2,3]}]}',
]
# Hostile text (issue 10): both readers refuse it, at "$" with a location or at the same path.
_HEAD = '{"kind": "pixel_program", "version": 1, "canvas": {"width": 8, "height": 8}, "ops": '
_BIG = '{"kind": "pixel_program", "version": 1, "canvas": {"width": 4096, "height": 4096}, "ops": '
HOSTILE_TEXTS = [
    "[" * 100_000,
    '{"ops": [' + "[" * 100_000,
    _HEAD + '[{"op": "SET", "x": ' + "9" * 5000 + ', "y": 0, "color": [1, 2, 3]}]}',
    _HEAD + '[], "metadata": {"f": 0.' + "1" * 100 + "}}",  # 102 characters: too long in metadata too
    _HEAD + '[], "metadata": {"f": -1e400}}',
    _HEAD + '[{"op": "SET", "x": NaN, "y": 0, "color": [1, 2, 3]}]}',
    _HEAD + '[{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "\\ud800", "color": [1, 2, 3]}]}',
    # The size limit, counted in bytes of the file; the render-cost limit, worded the same by both.
    _HEAD + "[]}" + " " * 4_000_000,
    _BIG + "[" + ", ".join(['{"op": "FILL", "color": [1, 2, 3, 4]}'] * 10000) + "]}",
    _BIG + "[" + ", ".join(['{"op": "CIRCLE", "cx": 9, "cy": 9, "r": 4096, "color": "#ffffff"}'] * 5000) + "]}",
    _BIG + "[" + ", ".join(['{"op": "LINE", "x1": -9, "y1": 0, "x2": 5000, "y2": 9, "color": [1, 2, 3, 4]}'] * 5000
                           + ['{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "' + "M" * 256 + '", "scale": 16, '
                              '"color": [1, 2, 3, 4]}'] * 5000) + "]}",
]
INVALID_TEXTS += HOSTILE_TEXTS


@pytest.mark.parametrize("text", INVALID_TEXTS)
def test_invalid_programs_exit_2_naming_the_same_path(runner, tmp_path, text):
    expected = python_verdict(text)
    assert expected is not None, "the Python validator accepts this program"
    returncode, stderr = runner_verdict(runner, text, tmp_path)
    assert returncode == 2
    # "gvpie-runner: FILE: PATH: RULE" with the path, and the rule, as the Python validator words them
    # (JSON syntax errors, path "$", are worded by each parser in its own way).
    message = stderr.splitlines()[-1].split(": ", 2)[2]
    if expected.startswith("$: invalid JSON"):
        assert message.startswith("$: invalid JSON")
    else:
        assert message == expected


VALID_ODDITIES = [
    '{"kind": "pixel_program", "version": 1, "canvas": {"width": 2, "height": 2}, '
    '"ops": [{"op": "SET", "x": -0, "y": 1, "color": "#FfAa0080"}]}',
    '\ufeff{"kind": "pixel_program", "version": 1, "canvas": {"width": 1, "height": 1}, "ops": [], '
    '"metadata": {"d": "' + "é" * 2000 + '", "n": [1.5, -0.0, 1e16, 12345678901234567890123, null, true]}}',
    '{"kind": "pixel_program", "version": 1, "canvas": {"width": 9, "height": 9}, "palette": {"_A9": [1, 2, 3, 4]}, '
    '"ops": [{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "\\ud83d\\ude00\\u00e9", "scale": 1, "color": "_A9"}]}',
]


@pytest.mark.parametrize("text", VALID_ODDITIES)
def test_unusual_but_valid_programs_are_accepted_by_both(runner, tmp_path, text):
    assert python_verdict(text.encode("utf-8")) is None
    returncode, stderr = runner_verdict(runner, text, tmp_path)
    assert returncode == 0, stderr
    assert np.array_equal(gpu.read_png(tmp_path / "out.png"), render(parse_program(text.encode("utf-8"))))


def test_costs_at_the_limit_are_valid_for_both(runner, tmp_path):
    """The cost limit is inclusive: one pixel more is refused by both (the valid one is not rendered here:
    745 translucent 4096x4096 FILLs take long on a software Vulkan device)."""
    ops = [{"op": "FILL", "color": [1, 2, 3, 4]}] * 745 + [
        {"op": "RECT", "x": 0, "y": 0, "width": 4096, "height": 1902, "color": [1, 2, 3]},
        {"op": "RECT", "x": -2048, "y": 4095, "width": 4096, "height": 5, "color": [1, 2, 3]}]
    assert python_verdict(json.dumps(doc(ops, 4096, 4096))) is None
    over = json.dumps(doc(ops + [{"op": "SET", "x": 0, "y": 0, "color": [1, 2, 3]}], 4096, 4096))
    expected = python_verdict(over)
    assert expected is not None and expected.startswith("ops: render cost 100,000,000,001 exceeds")
    returncode, stderr = runner_verdict(runner, over, tmp_path)
    assert returncode == 2 and stderr.splitlines()[-1].split(": ", 2)[2] == expected


def test_hostile_and_oversized_files_are_refused_before_reading(runner, tmp_path):
    huge = tmp_path / "huge.json"
    with huge.open("wb") as fh:
        fh.truncate(61_000_000)
    proc = subprocess.run([str(runner), "render", str(huge), "--out", str(tmp_path / "o.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"gvpie-runner: {huge}: $: the program is 61,000,000 bytes; at most 4,000,000"
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"kind": "\xe9"}')
    proc = subprocess.run([str(runner), "render", str(latin), "--out", str(tmp_path / "o.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and f"{latin}: $: invalid JSON: not UTF-8" in proc.stderr


def test_metadata_size_limit_is_measured_like_python(runner, tmp_path):
    def program_with(description: str) -> str:
        return json.dumps(doc([], 1, 1, metadata={"d": description, "f": 0.1}), ensure_ascii=False)
    base = len(json.dumps({"d": "", "f": 0.1}, separators=(",", ":")).encode())
    fits, too_big = program_with("é" * ((4096 - base) // 2)), program_with("é" * ((4096 - base) // 2) + "é")
    assert python_verdict(fits) is None and python_verdict(too_big) is not None
    assert runner_verdict(runner, fits, tmp_path)[0] == 0
    assert runner_verdict(runner, too_big, tmp_path)[0] == 2


def test_rejection_message_is_the_runners_own_line(runner, tmp_path):
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(doc([{"op": "RECT", "x": 0, "y": 0, "width": 0, "height": 1, "color": WHITE}])))
    with pytest.raises(gpu.ProgramRejected) as err:
        gpu.render_gpu(source, tmp_path / "out.png", runner=runner)
    assert str(err.value) == f"gvpie-runner: {source}: ops[0].width: must be > 0"
    assert not (tmp_path / "out.png").exists()


def test_command_line_misuse_exits_2(runner, tmp_path):
    source = tmp_path / "p.json"
    source.write_text(json.dumps(doc([])))
    no_target = subprocess.run([str(runner), "render", str(source)], capture_output=True, text=True)
    assert no_target.returncode == 2 and "--out" in no_target.stderr
    missing = subprocess.run([str(runner), "render", str(tmp_path / "absent.json"), "--out", str(tmp_path / "o.png")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "absent.json: cannot read" in missing.stderr


def test_missing_runner_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("GVPIE_RUNNER", str(tmp_path / "nowhere"))
    with pytest.raises(gpu.RunnerUnavailable, match="GVPIE_RUNNER"):
        gpu.find_runner()


def test_building_without_cargo_says_how_to_get_the_runner(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(gpu.RunnerUnavailable, match="install Rust"):
        gpu.build_runner()
