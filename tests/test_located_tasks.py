"""Tasks written as bug reports: the worker finds the file, shows the part that matters, and the edit
applies to the real file (issue 11). The real CLI, a real repository, the scripted loopback LLM."""

from __future__ import annotations

import json

import pytest

from conftest import make_repo, run_cli, write_tasks
from llm_server import LLMServer

TEXT = '''"""Text helpers."""


def ordinal(number):
    """The number with its English ordinal suffix."""
    if 10 <= number % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"
'''
TEST = '''from pkg.text import ordinal


def test_teens():
    assert ordinal(13) == "13th"
    assert ordinal(21) == "21st"
'''
BUGGY = TEXT.replace("10 <= number % 100 <= 20", "11 <= number % 100 <= 12")
FIX = ('pkg/text.py\n```python\n<<<<<<< SEARCH\n    if 11 <= number % 100 <= 12:\n=======\n'
       '    if 10 <= number % 100 <= 20:\n>>>>>>> REPLACE\n```\n')
OTHERS = {f"pkg/mod{n}.py": f'def helper_{n}(x):\n    """Unrelated helper {n}."""\n    return x + {n}\n' for n in range(5)}


def user_prompt(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")


def test_a_bug_report_without_file_names_is_fixed_in_the_file_the_traceback_names(tmp_path):
    repo = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/text.py": BUGGY, "tests/test_text.py": TEST,
                                         **OTHERS})
    home = tmp_path / "home"
    home.mkdir()
    write_tasks(home, [{"id": "teens", "title": "ordinal(13) returns '13rd'", "kind": "code",
                        "tests": ["python -m pytest -q tests/test_text.py"]}])
    with LLMServer([FIX]) as server:
        out = run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server.url, "--no-memory", "--once")
        (request,) = server.requests
    assert out.returncode == 0, out.stdout + out.stderr
    prompt = user_prompt(request)
    assert "pkg/text.py" in prompt and "def ordinal(number):" in prompt
    assert "helper_3" not in prompt  # unrelated modules are not shown
    assert "10 <= number % 100 <= 20" in (repo / "pkg" / "text.py").read_text()
    attempt = json.loads((home / "artifacts" / "teens.attempt-1.json").read_text())
    best = attempt["localisation"]["files"][0]
    assert best["path"] == "pkg/text.py" and any("traceback" in r or "ordinal" in r for r in best["reasons"])
    status = run_cli("--home", str(home), "--status").stdout
    assert "note: teens: files: pkg/text.py" in status


# The function written out whole, as small models like to answer (the `symbol` format).
WHOLE_FUNCTION = "pkg/text.py\n```python\n" + TEXT[TEXT.index("def ordinal"):] + "```\n"


@pytest.mark.parametrize("answer", [FIX, WHOLE_FUNCTION], ids=["search-replace", "whole-function"])
def test_a_large_file_is_shown_focused_and_the_edit_applies_to_the_real_file(tmp_path, answer):
    filler = "".join(f'\n\ndef helper_{n}(value):\n    """Helper {n}."""\n    total = value\n'
                     + "".join(f"    total += {i}\n" for i in range(12)) + "    return total\n" for n in range(90))
    big = BUGGY + filler
    assert big.count("\n") > 1500
    repo = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/text.py": big, "tests/test_text.py": TEST})
    home = tmp_path / "home"
    home.mkdir()
    write_tasks(home, [{"id": "teens", "title": "Fix ordinal() for 11-13", "kind": "code", "inputs": ["pkg/text.py"],
                        "tests": ["python -m pytest -q tests/test_text.py"]}])
    with LLMServer([answer]) as server:
        out = run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server.url, "--no-memory", "--once")
        (request,) = server.requests
    assert out.returncode == 0, out.stdout + out.stderr
    prompt = user_prompt(request)
    assert "each function or class you change written out whole" in request["messages"][0]["content"]
    assert "def ordinal(number):" in prompt and '    """The number with its English ordinal suffix."""' in prompt
    assert "not shown" in prompt and len(prompt) < len(big) / 3  # focused, not the whole module
    after = (repo / "pkg" / "text.py").read_text()
    assert after == big.replace("11 <= number % 100 <= 12", "10 <= number % 100 <= 20")
    attempt = json.loads((home / "artifacts" / "teens.attempt-1.json").read_text())
    assert attempt["excerpts"] == ["pkg/text.py"]


UNITS = '''"""Unit conversions."""


def celsius_to_fahrenheit(degrees):
    """Convert a temperature from degrees Celsius to degrees Fahrenheit."""
    return degrees * 9 / 5 + 23
'''
UNITS_FIX = ('pkg/units.py\n```python\n<<<<<<< SEARCH\n    return degrees * 9 / 5 + 23\n=======\n'
             '    return degrees * 9 / 5 + 32\n>>>>>>> REPLACE\n```\n')
# The check prints nothing and names no file: only the code index can tie the report to pkg/units.py.
CHECK = 'python -c "import pkg.units as u, sys; sys.exit(u.celsius_to_fahrenheit(100) != 212)"\n'


def test_the_code_index_finds_the_file_when_nothing_else_names_it(tmp_path):
    repo = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/units.py": UNITS, "check.sh": CHECK, **OTHERS})
    task = {"id": "fahrenheit", "title": "Temperatures come out wrong in Fahrenheit",
            "description": "Boiling water shows as 203 degrees instead of 212.", "kind": "code",
            "tests": ["sh check.sh"], "max_attempts": 1}
    prompts = {}
    for label, index in (("without", "false"), ("with", "true")):
        home = tmp_path / f"home-{label}"
        home.mkdir()
        write_tasks(home, [task])
        with LLMServer([UNITS_FIX]) as server:
            out = run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server.url, "--no-memory", "--once",
                          "--apply", "none", env={"GVPIE_CODE_INDEX": index})
            prompts[label] = user_prompt(server.requests[0])
        assert out.returncode == 0, out.stdout + out.stderr  # the scripted answer edits the file either way
    assert "def celsius_to_fahrenheit" not in prompts["without"]
    assert "pkg/units.py" in prompts["with"] and "def celsius_to_fahrenheit(degrees):" in prompts["with"]
    attempt = json.loads((tmp_path / "home-with" / "artifacts" / "fahrenheit.attempt-1.json").read_text())
    best = attempt["localisation"]["files"][0]
    assert best["path"] == "pkg/units.py" and best["reasons"][0].startswith("code search #1")
    import lancedb

    db = lancedb.connect(tmp_path / "home-with" / "lancedb")
    rows = db.open_table("code").search().where("path = 'pkg/units.py'").limit(None).to_list()
    assert [r["qualname"] for r in rows] == ["celsius_to_fahrenheit"]
    assert not (tmp_path / "home-without" / "lancedb" / "code.lance").exists()
