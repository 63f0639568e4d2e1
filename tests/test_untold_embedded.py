"""A bug report that names no file, fixed by the real bundled model (issue 11): the worker finds the
file among unrelated modules (localisation and the code index), shows it, and the model's edit passes
the repository's own tests."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import ROOT, make_repo, run_cli, write_tasks

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

UNRELATED = {
    "units.py": '"""Unit conversions."""\n\n\ndef celsius_to_fahrenheit(degrees):\n    return degrees * 9 / 5 + 32\n',
    "slug.py": ('"""URL slugs."""\n\nimport re\n\n\ndef slugify(title):\n    """Lower-case words joined by dashes."""\n'
                '    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")\n'),
    "money.py": '"""Prices."""\n\n\ndef cents(amount):\n    """A price in whole cents."""\n    return round(amount * 100)\n',
}


def test_the_bundled_model_fixes_a_bug_report_that_names_no_file(tmp_path):
    pytest.importorskip("llama_cpp", reason="the embedded extra is not installed: pip install -e '.[embedded]'")
    demo = ROOT / "examples" / "demo_repo"
    repo = make_repo(tmp_path / "repo", {**{p.name: p.read_text() for p in demo.iterdir() if p.is_file()},
                                         **UNRELATED})
    home = tmp_path / "home"
    home.mkdir()
    write_tasks(home, [{"id": "words", "title": "Word counts are wrong when words are separated by newlines",
                        "description": "Counting the words of '  one   two\\nthree  ' must give 3 (any run of "
                                       "whitespace separates words), and an empty text has 0 words. "
                                       "str.split() with no argument splits that way.",
                        "kind": "code", "tests": ["python3 -m unittest -q test_textstats"]}])
    out = run_cli("--home", str(home), "--repo", str(repo), "--llm", "embedded", "--once", "--json", timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["tasks"][0]["status"] == "done"
    first = json.loads((home / "artifacts" / "words.attempt-1.json").read_text())
    assert first["localisation"]["files"][0]["path"] == "textstats.py"
    tests = subprocess.run(["python3", "-m", "unittest", "-q", "test_textstats"], cwd=repo, capture_output=True,
                           text=True, timeout=120)
    assert tests.returncode == 0, tests.stderr
    assert (repo / "units.py").read_text() == UNRELATED["units.py"]  # nothing else touched
