"""The agent benchmark's tasks are real: each test fails on the starting files and passes on the reference."""

from __future__ import annotations

import shutil
import sys

import pytest

from conftest import ROOT, make_repo
from auto_gvpie.runner import run_command

sys.path.insert(0, str(ROOT / "bench"))
from agent_tasks import SUITE  # noqa: E402


def test_the_suite_is_big_enough_and_mixes_languages():
    assert len(SUITE) >= 15
    assert {t.language for t in SUITE} == {"python", "rust"}
    assert len({t.name for t in SUITE}) == len(SUITE)


@pytest.mark.parametrize("task", SUITE, ids=lambda t: t.name)
def test_fails_before_and_passes_after(task, tmp_path):
    if task.language == "rust" and shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    repo = make_repo(tmp_path / "repo", task.files)
    env = {"CARGO_TARGET_DIR": str(tmp_path / "target")}
    assert not run_command(task.tests[0], repo, 300, env=env).passed, "the test must fail before the change"
    for rel, text in task.solution.items():
        (repo / rel).write_text(text)
    result = run_command(task.tests[0], repo, 300, env=env)
    assert result.passed, result.output
