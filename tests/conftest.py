"""Shared fixtures: real git repositories in temp dirs and a home laid out as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The edit corpus holds sample repositories (with their own test files), not tests of ours.
collect_ignore = ["edit_corpus"]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "Test")
    for rel, text in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TEST_CALC = ("from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
             "def test_mul():\n    assert mul(2, 3) == 6\n")

# An answer that fixes the repo fixture's bug, one that does not, and the task that asks for the fix.
FIX = "calc.py\n```python\ndef add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n```\n"
WRONG = "calc.py\n```python\ndef add(a, b):\n    return a * b\n\n\ndef mul(a, b):\n    return a * b\n```\n"
FIX_TASK = {"id": "fix-add", "title": "Fix add() in calc.py", "kind": "code", "inputs": ["calc.py"],
            "tests": ["python -m pytest -q test_calc.py"]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small project with a bug: add() subtracts; its test fails until fixed."""
    return make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC, ".gitignore": "__pycache__/\n"})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def write_tasks(home: Path, tasks: list[dict]) -> Path:
    path = home / "auto_tasks.json"
    path.write_text(json.dumps(tasks, indent=2) + "\n")
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process, exactly as a user runs it."""
    full_env = {**os.environ, "GVPIE_LLM_RETRIES": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env=full_env, timeout=timeout)
