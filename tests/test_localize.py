"""Tests for auto_gvpie.localize: which files a task is about, from real repositories and real test output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import git, make_repo

from auto_gvpie.codeindex import parse_symbols
from auto_gvpie.localize import localize
from auto_gvpie.testsel import is_test_path

# The fault: 11th, 12th and 13th are special; ordinal() knows nothing of it.
TEXT_RAISES = '''SUFFIXES = {1: "st", 2: "nd", 4: "th", 5: "th", 6: "th", 7: "th", 8: "th", 9: "th", 0: "th"}


def pluralize(word, count):
    return word if count == 1 else word + "s"


def ordinal(n):
    return str(n) + SUFFIXES[n % 10]
'''
TEXT_WRONG = TEXT_RAISES.replace('2: "nd", 4', '2: "nd", 3: "rd", 4')
SIX_MODULES = {
    "pkg/__init__.py": "",
    "pkg/numbers.py": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n\n\ndef percent(a, b):\n    return 100 * a / b\n",
    "pkg/dates.py": "DAYS = ['Mon', 'Tue']\n\n\ndef day_name(i):\n    return DAYS[i % 2]\n\n\ndef suffix(day):\n    return 'th'\n",
    "pkg/render.py": ("from pkg.text import ordinal\n\n\ndef ordinal_table(rows):\n"
                      "    return [ordinal(r) for r in rows]\n\n\ndef render_row(cells):\n    return ' | '.join(cells)\n"),
    "pkg/config.py": "import json\n\n\ndef load(path):\n    with open(path) as f:\n        return json.load(f)\n",
    "pkg/cli.py": "import sys\n\nfrom pkg import config\n\n\ndef main(argv=None):\n    return config.load((argv or sys.argv)[1])\n",
    "tests/test_text.py": ("from pkg.text import ordinal, pluralize\n\n\ndef test_plural():\n    assert pluralize('day', 2) == 'days'\n\n\n"
                           "def test_ordinal():\n    assert ordinal(1) == '1st'\n    assert ordinal(13) == '13th'\n"),
    "tests/test_numbers.py": "from pkg.numbers import clamp\n\n\ndef test_clamp():\n    assert clamp(5, 0, 3) == 3\n",
    ".gitignore": "__pycache__/\n",
}
PYTEST = "python -m pytest -q tests/test_text.py"


def six_module_repo(tmp_path: Path, text: str) -> Path:
    return make_repo(tmp_path / "repo", {**SIX_MODULES, "pkg/text.py": text})


def failing_output(repo: Path) -> str:
    """What the task's test prints on the untouched tree, exactly as a user would see it."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_text.py"],
                         cwd=repo, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_traceback_ending_in_the_module_picks_it_and_the_function(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_RAISES)
    output = failing_output(repo)
    assert "pkg/text.py:9: KeyError" in output  # a real traceback that ends in ordinal()
    ranking = localize(repo, "Ordinals are broken", "", [PYTEST], output, None)
    top = ranking.files[0]
    assert top.path == "pkg/text.py"
    assert top.symbols[0].name == "ordinal"
    assert "deepest traceback frame pkg/text.py:9 in ordinal" in top.reasons
    assert not any(is_test_path(f.path) for f in ranking.files)  # tests are what must pass, not the fault
    assert all(top.score > 2 * other.score for other in ranking.files[1:])


def test_a_title_naming_the_function_is_enough(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_WRONG)
    ranking = localize(repo, "ordinal(13) returns 13rd", "It should be 13th, like 11th and 12th.", [], "", None)
    top = ranking.files[0]
    assert top.path == "pkg/text.py" and top.symbols[0].name == "ordinal"
    assert top.reasons[0] == "named in the title: ordinal"
    # pkg/render.py only calls ordinal; defining it is what counts.
    assert "pkg/render.py" not in ranking.paths[:1]


def test_a_test_that_only_imports_and_calls_points_at_the_module(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_WRONG)
    output = failing_output(repo)
    assert "AssertionError" in output and "pkg/text.py:" not in output  # no frame inside the module
    ranking = localize(repo, "Fix the failing test", "", [PYTEST], output, None)
    top = ranking.files[0]
    assert top.path == "pkg/text.py" and top.symbols[0].name == "ordinal"
    assert "called by the failing test test_ordinal: ordinal" in top.reasons
    assert "imported by tests/test_text.py" in top.reasons
    assert not any("traceback" in reason for reason in top.reasons)
    # numbers.py is imported by another test file, which the command does not run.
    assert "pkg/numbers.py" not in ranking.paths


CRATE = {
    "Cargo.toml": '[package]\nname = "words"\nversion = "0.1.0"\nedition = "2021"\n',
    "src/lib.rs": "pub mod text;\npub mod math;\n",
    "src/text.rs": ('/// The ordinal of n.\npub fn ordinal(n: u32) -> String {\n'
                    '    let s = match n % 10 { 1 => "st", 2 => "nd", 3 => "rd", _ => "th" };\n'
                    '    format!("{}{}", n, s)\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n'
                    '    fn thirteenth() {\n        assert_eq!(ordinal(13), "13th");\n    }\n}\n'),
    "src/math.rs": "pub fn add(a: i32, b: i32) -> i32 { a + b }\npub fn idx(v: &[i32], i: usize) -> i32 { v[i] }\n",
    "tests/it.rs": ('use words::text::ordinal;\nuse words::math;\n#[test]\nfn twelfth() { assert_eq!(ordinal(12), "12th"); }\n'
                    '#[test]\nfn oob() { assert_eq!(math::idx(&[1], 3), 1); }\n'),
}
# Printed by `cargo test` (Rust 1.95) for the crate above.
CARGO_IN_FILE = """\
running 1 test
test text::tests::thirteenth ... FAILED

failures:

---- text::tests::thirteenth stdout ----

thread 'text::tests::thirteenth' (23424) panicked at src/text.rs:12:9:
assertion `left == right` failed
  left: "13rd"
 right: "13th"
stack backtrace:
   0: __rustc::rust_begin_unwind
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/panicking.rs:689:5
   4: words::text::tests::thirteenth
             at ./src/text.rs:12:9

failures:
    text::tests::thirteenth

test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.31s
"""
CARGO_INTEGRATION = """\
     Running tests/it.rs (target/debug/deps/it-1c2d3e)

running 2 tests
test oob ... ok
test twelfth ... FAILED

---- twelfth stdout ----

thread 'twelfth' (4242) panicked at tests/it.rs:4:16:
assertion `left == right` failed
  left: "12nd"
 right: "12th"
"""
CARGO_OUT_OF_BOUNDS = """\
---- oob stdout ----

thread 'oob' (4243) panicked at src/math.rs:2:45:
index out of bounds: the len is 1 but the index is 3
"""


def test_rust_panic_in_an_in_file_test_points_at_what_the_test_calls(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "crate", CRATE)
    ranking = localize(repo, "Fix the test", "", ["cargo test"], CARGO_IN_FILE, None)
    top = ranking.files[0]
    assert top.path == "src/text.rs"
    assert top.symbols[0].name == "ordinal"  # not the test function the panic is in
    assert "holds the failing test tests.thirteenth" in top.reasons
    assert "called by the failing test thirteenth: ordinal" in top.reasons
    assert not any("panicking.rs" in r for f in ranking.files for r in f.reasons)  # the standard library's frames


def test_rust_panic_in_an_integration_test_and_inside_the_code(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "crate", CRATE)
    ranking = localize(repo, "Fix the tests", "", ["cargo test --test it"], CARGO_INTEGRATION, None)
    assert ranking.files[0].path == "src/text.rs" and ranking.files[0].symbols[0].name == "ordinal"
    assert "tests/it.rs" not in ranking.paths
    ranking = localize(repo, "Fix the tests", "", ["cargo test --test it"], CARGO_OUT_OF_BOUNDS, None)
    assert ranking.files[0].path == "src/math.rs" and ranking.files[0].symbols[0].name == "idx"
    assert "deepest traceback frame src/math.rs:2 in idx" in ranking.files[0].reasons


def test_js_stack_from_a_worktree_elsewhere(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "web", {
        "src/x.js": "function ordinal(n) {\n  return n.foo.bar;\n}\nmodule.exports = {ordinal};\n",
        "src/y.js": "function other() {\n  return 1;\n}\nmodule.exports = {other};\n",
        "test/x.test.js": "const {ordinal} = require('../src/x');\nordinal(1);\n"})
    output = ("/home/u/.gvpie/worktrees/t1/src/x.js:2\n  return n.foo.bar;\n               ^\n\n"
              "TypeError: Cannot read properties of undefined (reading 'bar')\n"
              "    at ordinal (/home/u/.gvpie/worktrees/t1/src/x.js:2:16)\n"
              "    at Object.<anonymous> (/home/u/.gvpie/worktrees/t1/test/x.test.js:2:1)\n"
              "    at Module._compile (node:internal/modules/cjs/loader:1521:14)\n")
    ranking = localize(repo, "crash", "", ["node test/x.test.js"], output, None)
    assert ranking.paths[0] == "src/x.js"
    assert ranking.files[0].reasons[0] == "deepest traceback frame src/x.js:2 in ordinal"


def test_frames_outside_the_repository_are_not_candidates(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_WRONG)
    (repo / "json").mkdir()
    output = ('Traceback (most recent call last):\n'
              '  File "/srv/worktrees/t9/pkg/cli.py", line 7, in main\n'
              '    return config.load((argv or sys.argv)[1])\n'
              '  File "/srv/worktrees/t9/pkg/config.py", line 6, in load\n'
              '    return json.load(f)\n'
              '  File "/usr/lib/python3.11/json/__init__.py", line 293, in load\n'
              '  File "/home/u/.venv/lib/python3.11/site-packages/pkg/numbers.py", line 2, in clamp\n'
              'json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n')
    ranking = localize(repo, "cli crashes on an empty config", "", [], output, None)
    assert ranking.paths[:2] == ["pkg/config.py", "pkg/cli.py"]
    assert ranking.files[0].reasons[0] == "deepest traceback frame pkg/config.py:6 in load"
    assert "pkg/numbers.py" not in ranking.paths  # only a site-packages copy was in the traceback


def test_inputs_come_first_in_their_order(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_RAISES)
    output = failing_output(repo)
    ranking = localize(repo, "Ordinals", "", [PYTEST], output, None, inputs=["pkg/dates.py", "./pkg/numbers.py"])
    assert ranking.paths[:3] == ["pkg/dates.py", "pkg/numbers.py", "pkg/text.py"]
    assert ranking.files[0].reasons == ["listed in the task's inputs"]


def test_files_and_qualified_names_in_the_description(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "app/pager.py": "class Pager:\n    def next_page(self):\n        return 1\n\n    def prev_page(self):\n        return 0\n",
        "app/view.py": "class View:\n    def next_page(self):\n        return 2\n",
        "app/model.py": "def save():\n    pass\n"})
    ranking = localize(repo, "Paging goes backwards", "In pager.py, `Pager.next_page` should add one.", [], "", None)
    top = ranking.files[0]
    assert top.path == "app/pager.py" and top.symbols[0].qualname == "Pager.next_page"
    assert "named in the description: pager.py" in top.reasons
    # View.next_page shares the short name only: a weak, shared signal.
    assert ranking.files[0].score > 2 * next(f.score for f in ranking.files if f.path == "app/view.py")


class FakeIndex:
    """The part of CodeIndex that localize uses; its results are real symbols of the repo."""

    def __init__(self, repo: Path, hits: list[tuple[str, str]], broken: bool = False) -> None:
        self.hits = [(next(s for s in parse_symbols(p, (repo / p).read_bytes()) if s.qualname == q), 0.5)
                     for p, q in hits]
        self.broken = broken
        self.queries: list[str] = []

    def search(self, query: str, k: int = 10):
        self.queries.append(query)
        if self.broken:
            raise RuntimeError("table code is corrupt")
        return self.hits[:k]


def test_index_search_breaks_ties_and_a_broken_index_is_a_note(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_WRONG)
    index = FakeIndex(repo, [("pkg/dates.py", "suffix"), ("pkg/text.py", "ordinal")])
    ranking = localize(repo, "Wrong suffix for days", "", [], "", index)  # type: ignore[arg-type]
    assert ranking.paths[0] == "pkg/dates.py"
    assert "code search #1: suffix" in ranking.files[0].reasons
    assert "Wrong suffix for days" in index.queries[0]
    broken = localize(repo, "ordinal(13)", "", [], "", FakeIndex(repo, [], broken=True))  # type: ignore[arg-type]
    assert broken.paths[0] == "pkg/text.py"
    assert broken.notes == ["code search failed: table code is corrupt"]


def test_ranking_is_readable_and_serialisable(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_RAISES)
    ranking = localize(repo, "ordinal(13) crashes", "", [PYTEST], failing_output(repo), None)
    summary = ranking.summary()
    assert summary.startswith("pkg/text.py (deepest traceback frame pkg/text.py:9 in ordinal; named in the title: ordinal)")
    assert "\n" not in summary
    data = json.loads(json.dumps(ranking.to_json()))
    assert data["files"][0]["path"] == "pkg/text.py"
    assert data["files"][0]["symbols"][0] == {"qualname": "ordinal", "kind": "function", "lines": [8, 9]}
    assert all(f["reasons"] for f in data["files"])
    empty = localize(repo, "Improve things", "", [], "", None)
    assert empty.files == [] and empty.summary() == "no file found"


def test_conventional_test_paths() -> None:
    for path in ("tests/test_x.py", "test_x.py", "pkg/x_test.py", "conftest.py", "web/__tests__/a.js",
                 "src/a.test.ts", "src/a.spec.js", "go/x_test.go", "tests/it.rs"):
        assert is_test_path(path), path
    for path in ("pkg/text.py", "src/lib.rs", "src/testing_utils.py", "contest.py", "src/latest.js"):
        assert not is_test_path(path), path


def test_a_traceback_pasted_into_the_description_and_module_imports(tmp_path: Path) -> None:
    repo = six_module_repo(tmp_path, TEXT_RAISES)
    pasted = ("Seen in production:\n\nTraceback (most recent call last):\n"
              '  File "/opt/app/pkg/render.py", line 5, in ordinal_table\n'
              '  File "/opt/app/pkg/text.py", line 9, in ordinal\nKeyError: 3\n')
    ranking = localize(repo, "Report crashes", pasted, [], "", None)
    assert ranking.paths[0] == "pkg/text.py" and ranking.files[1].path == "pkg/render.py"
    # `from pkg import text` imports the module; `text.ordinal(...)` in the failing test calls into it.
    (repo / "tests" / "test_text.py").write_text(
        "from pkg import text\n\n\ndef test_ordinal():\n    assert text.ordinal(13) == '13th'\n")
    output = "tests/test_text.py:5: AssertionError\nFAILED tests/test_text.py::test_ordinal - AssertionError\n"
    ranking = localize(repo, "Fix it", "", [PYTEST], output, None)
    assert ranking.paths == ["pkg/text.py"]
    assert "called by the failing test test_ordinal: text.ordinal" in ranking.files[0].reasons
    assert "imported by tests/test_text.py" in ranking.files[0].reasons


def test_symlinks_out_of_the_repository_and_service_files_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "outside.py"
    secret.write_text("def leaked_secret_name():\n    pass\n")
    repo = make_repo(tmp_path / "repo", {"app.py": "def run():\n    pass\n",
                                         "artifacts/old.py": "def leaked_secret_name():\n    pass\n"})
    (repo / "link.py").symlink_to(secret)
    git(repo, "add", "link.py")
    git(repo, "commit", "-q", "-m", "link")
    ranking = localize(repo, "leaked_secret_name() fails", "", [], "", None, protected=["artifacts"])
    assert ranking.files == []
