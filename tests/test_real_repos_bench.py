"""The real-repository benchmark's generator (bench/real_repos.py): mutations and task building."""

from __future__ import annotations

import ast
import difflib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import real_repos as rr  # noqa: E402

MODULE = '''\
"""A small module to mutate."""


def clamp(x, lo, hi):
    """Clamp x into [lo, hi]."""
    if x < lo:
        return lo
    elif x > hi:
        return hi
    else:
        return x


def head(items, n=3):
    if not items:
        return []
    out = items[:n]
    return out[0:len(out)]


class Box:
    def size(self, k):
        """Sum of range(k), less one at 2."""
        total = 0
        for i in range(k):
            if i == 2:
                total += -1
            total += i
        return total

    def same(self, a, b):
        return (a
                != b)
'''


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    removed, added = [], []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith("-") and not line.startswith("---"):
            removed.append(line[1:])
        elif line.startswith("+") and not line.startswith("+++"):
            added.append(line[1:])
    return removed, added


def test_every_kind_is_found_and_each_mutant_is_valid_python_with_a_minimal_diff():
    mutations = rr.find_mutations("mod.py", MODULE)
    assert {m.kind for m in mutations} == set(rr.KINDS)
    for m in mutations:
        mutant = rr.check_mutant(MODULE, m)
        assert mutant is not None, m
        ast.parse(mutant)
        removed, added = changed_lines(MODULE, mutant)
        if m.kind in ("compare", "off_by_one"):
            assert len(removed) == len(added) == 1, m  # one line, edited in place
            assert removed[0].strip() != added[0].strip()
        elif m.kind == "drop_branch":
            assert added == [] and 1 <= len(removed) <= 2, m  # whole lines deleted, nothing else
        else:
            assert [a.strip() for a in added] == ["return None"], m
        # everything outside the span is byte for byte the original
        assert mutant[:m.start] == MODULE[:m.start]
        assert mutant[m.start + len(m.replacement):] == MODULE[m.end:]


def test_mutation_details():
    by = {(m.kind, m.function, m.detail) for m in rr.find_mutations("mod.py", MODULE)}
    assert ("compare", "clamp", "`<` -> `<=`") in by
    assert ("compare", "Box.same", "`!=` -> `==`") in by  # the operator on a continuation line
    assert ("drop_branch", "clamp", "dropped the `elif` branch at line 8") in by
    assert ("drop_branch", "clamp", "dropped the `else` branch at line 10") in by
    assert ("drop_branch", "head", "dropped the `if` at line 15 and its body") in by
    assert ("off_by_one", "head", "slice bound `n` -> `n + 1`") in by or \
        ("off_by_one", "head", "slice bound `n` -> `n - 1`") in by
    assert any(k == "off_by_one" and f == "Box.size" and d.startswith("`-1` ->") for k, f, d in by)
    # the docstring stays when the body goes
    body = next(m for m in rr.find_mutations("mod.py", MODULE) if m.kind == "remove_body" and m.function == "clamp")
    assert '"""Clamp x into [lo, hi]."""\n    return None\n\n\ndef head' in body.apply(MODULE)
    # a module-level statement is never mutated; a one-line def neither
    assert all(m.function for m in rr.find_mutations("mod.py", "X = 1 < 2\ndef f(): return 1 < 2\n"))
    assert rr.find_mutations("mod.py", "X = 1 < 2\ndef f(): return 1 < 2\n") == []


def test_the_same_seed_gives_the_same_plan_and_another_seed_another():
    files = {"a.py": MODULE, "b.py": MODULE.replace("clamp", "limit")}
    one = rr.plan_mutations(files, seed=3)
    assert one == rr.plan_mutations(files, seed=3)
    assert [m.key for m in one["off_by_one"]] != [m.key for m in rr.plan_mutations(files, seed=4)["off_by_one"]]


def test_a_no_op_or_broken_mutant_is_refused():
    m = rr.Mutation("mod.py", "clamp", "compare", "x", 1, 0, 0, "")
    assert rr.check_mutant(MODULE, m) is None  # no change
    broken = rr.Mutation("mod.py", "clamp", "compare", "x", 1, MODULE.index("def clamp"), MODULE.index("def clamp") + 3, "de")
    assert rr.check_mutant(MODULE, broken) is None


def test_report_title_from_the_assertion():
    errors = ["AssertionError: assert None == 'street'",
              "+  where None = <function dasherize at 0x7fb09a13c040>('street')"]
    assert rr.report_title("test_inflection.py::test_dasherize[street]", [], errors) == \
        "dasherize('street') returns None, expected 'street'"
    assert rr.report_title("t.py::A::test_x", ["self.assertEqual(f(1), 2)"], ["AssertionError: 1 != 2"]) == \
        "test_x fails: 1 != 2"
    assert rr.report_title("t.py::test_y", [], ["TypeError: 'NoneType' object is not iterable"]) == \
        "test_y raises TypeError: 'NoneType' object is not iterable"


def test_pins_name_at_least_two_projects_with_their_tests_and_hashes():
    pins = rr.load_pins()
    assert len(pins) >= 2
    for pin in pins:
        assert len(pin.sha256) == 64 and pin.sdist.endswith(".tar.gz") and pin.tests and pin.sources


@pytest.mark.slow
def test_generate_on_one_pinned_project_and_verify(tmp_path):
    """inflection 0.5.1 (15 kB, 455 tests in ~2 s): fetched with pip, checked, mutated, verified."""
    pin = next(p for p in rr.load_pins() if p.name == "inflection")
    out = tmp_path / "suite"
    manifest = rr.generate(out, seed=1, count=3, pins=[pin], log=lambda *a: None)
    tasks = manifest["tasks"]
    assert len(tasks) == 3
    assert [t["kind"] for t in tasks] == ["named", "report", "named"]
    for task in tasks:
        entry = json.loads((out / task["id"] / "task.json").read_text())
        assert entry["tests"][0].startswith("python -m pytest -q test_inflection.py::")
        assert task["failing_tests"] and task["file"] == "inflection/__init__.py"
        if task["kind"] == "named":
            assert entry["inputs"] == [task["file"]] and entry["title"].startswith("Fix ")
        else:
            assert entry["inputs"] == [] and "0x" not in entry["description"]
        repo = out / task["id"] / "repo"
        assert rr.git(repo, "rev-list", "--count", "HEAD").strip() == "1"  # the bug is HEAD itself
        assert rr.git(repo, "status", "--porcelain") == ""
    assert rr.verify(out, log=lambda *a: None) == []
