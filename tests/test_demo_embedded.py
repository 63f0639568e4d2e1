"""The quick start's main job with the real bundled model: the shipped demo tasks (a pixel program and a
bug fix on the demo repository from examples/) run with `--once --llm embedded`, then the viewer shows them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, make_repo, run_cli

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="the embedded extra is not installed: pip install -e '.[embedded]'")
    home = tmp_path_factory.mktemp("home")
    shutil.copy(ROOT / "auto_tasks.json", home / "auto_tasks.json")
    demo = ROOT / "examples" / "demo_repo"
    repo = make_repo(home / "demo", {p.name: p.read_text() for p in demo.iterdir() if p.is_file()})
    out = run_cli("--home", str(home), "--repo", str(repo), "--llm", "embedded", "--once", "--json", timeout=1800)
    return home, repo, out


def test_both_demo_tasks_are_done(demo_run):
    home, repo, out = demo_run
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert {t["id"]: t["status"] for t in report["tasks"]} == {"demo-boot-screen": "done", "demo-word-count": "done"}


def test_the_pixel_task_left_a_valid_program_and_its_picture(demo_run):
    home, _, _ = demo_run
    assert (home / "artifacts" / "demo-boot-screen.png").stat().st_size > 0
    view = subprocess.run([sys.executable, str(ROOT / "auto_gvpie" / "view_pixels.py"), "--latest", "--json"],
                          cwd=home, capture_output=True, text=True, timeout=120)
    assert view.returncode == 0, view.stderr
    shown = json.loads(view.stdout)
    assert (shown["width"], shown["height"]) == (64, 64)


def test_the_code_task_fixed_the_demo_repository(demo_run):
    _, repo, _ = demo_run
    tests = subprocess.run(["python3", "-m", "unittest", "-q", "test_textstats"], cwd=repo, capture_output=True,
                           text=True, timeout=120)
    assert tests.returncode == 0, tests.stderr
