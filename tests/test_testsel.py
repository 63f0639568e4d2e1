"""testsel: widening a test selection to its files, which files judge an answer, whether a baseline
could start at all; and the worktree plumbing behind them (copy_ignored, settle, restore)."""

from __future__ import annotations

import os

import pytest

from auto_gvpie import testsel
from auto_gvpie.config import ConfigError, load_settings
from auto_gvpie.edits import apply_answer
from auto_gvpie.testsel import cannot_start, failing_tests, is_test_path, widen
from auto_gvpie.workspace import Worktree
from conftest import CALC, TEST_CALC, git, make_repo


@pytest.mark.parametrize("command, widened", [
    # pytest node ids and -k, in every spelling of the runner
    ("pytest -q test_calc.py::test_add", "pytest -q test_calc.py"),
    ("pytest tests/test_x.py::TestA::test_b[1-2] -x", "pytest tests/test_x.py -x"),
    ("python -m pytest -q tests/test_x.py::test_a", "python -m pytest -q tests/test_x.py"),
    ("python3.11 -X dev -m pytest t.py::a", "python3.11 -X dev -m pytest t.py"),
    (".venv/bin/python -m pytest t.py::a", ".venv/bin/python -m pytest t.py"),
    ("py.test t.py::a", "py.test t.py"),
    ("pytest -k add tests/test_calc.py", "pytest tests/test_calc.py"),
    ("pytest -k=add tests/", "pytest tests/"),
    ("pytest -kadd -q tests/", "pytest -q tests/"),
    ("pytest -k 'add and not slow' -q", "pytest -q"),
    ("pytest a.py::t1 a.py::t2 b.py::t3", "pytest a.py b.py"),
    ("pytest a.py a.py::t1", "pytest a.py"),
    ("pytest -W error::DeprecationWarning t.py::a", "pytest -W error::DeprecationWarning t.py"),
    ("pytest --deselect t.py::slow t.py", None),  # a deselection is the user's, not a narrowing
    ("pytest 'tests/a b.py'::test_x", "pytest 'tests/a b.py'"),
    ("pytest 'tests/a b.py::test_x'", "pytest 'tests/a b.py'"),
    # env assignments, cd prefixes, pipes and redirections stay exactly as written
    ("cd sub && PYTHONPATH=src pytest -q t.py::a 2>&1 | tail -5",
     "cd sub && PYTHONPATH=src pytest -q t.py 2>&1 | tail -5"),
    ("env FOO=1 timeout 60 pytest t.py::a", "env FOO=1 timeout 60 pytest t.py"),
    ("uv run pytest t.py::a", "uv run pytest t.py"),
    ("make build && pytest $HOME_TESTS t.py::a", "make build && pytest $HOME_TESTS t.py"),
    # unittest
    ("python -m unittest test_mod.TestCase.test_a", "python -m unittest test_mod"),
    ("python -m unittest tests.test_mod.TestCase", "python -m unittest tests.test_mod"),
    ("python -m unittest -k add test_mod", "python -m unittest test_mod"),
    ("python -m unittest test_mod", None),
    ("python -m unittest discover -s tests", None),
    # cargo: a bare filter picks across the crate; --test NAME is one file (tests/NAME.rs)
    ("cargo test add", "cargo test"),
    ("cargo test --test api add", "cargo test --test api"),
    ("cargo test --test api", None),
    ("cargo test -p core add -- --exact --nocapture", "cargo test -p core -- --nocapture"),
    ("cargo test add -- --exact", "cargo test"),
    ("cargo test --lib parser::", "cargo test --lib"),
    ("cargo test --features=fast add", "cargo test --features=fast"),
    ("cargo build", None),
    # go
    ("go test -run TestAdd ./pkg", "go test ./pkg"),
    ("go test -run=TestAdd -v ./...", "go test -v ./..."),
    ("go test ./...", None),
    # whole files already, or cannot tell
    ("pytest -q tests/", None),
    ("python -m pytest", None),
    ("make test", None),
    ("pytest $(git ls-files 'test_*.py')", None),
    ("pytest 'unclosed", None),
    ("npm test -- -t add", None),
])
def test_widen(command, widened):
    assert widen(command) == widened


def test_widen_resolves_unittest_names_against_the_tree(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "checks.py").write_text("")
    assert widen("python -m unittest pkg.checks.lowercase_case.test_a", tmp_path) == "python -m unittest pkg.checks"


@pytest.mark.parametrize("path, expected", [
    ("tests/test_calc.py", True), ("test_calc.py", True), ("calc_test.py", True), ("conftest.py", True),
    ("pkg/tests/helpers.py", True), ("tests/fixtures/data.json", True), ("tests/api.rs", True),
    ("pkg/calc_test.go", True), ("src/app.test.js", True), ("src/app.spec.ts", True), ("test/util.js", True),
    ("app/tests.py", True), ("spec/models/user_spec.rb", True),
    ("calc.py", False), ("src/lib.rs", False), ("testsel.py", False), ("pkg/contest.py", False),
    ("docs/testing.md", False), ("latest_results.py", False),
])
def test_is_test_path(path, expected):
    assert is_test_path(path) is expected


def test_test_files_names_what_the_commands_run(tmp_path):
    files = ["tests/test_x.py", "tests/conftest.py", "tests/helper_data.txt", "tests/unit/test_y.py", "check.py",
             "scripts/verify.sh", "pkg/__init__.py", "pkg/checks.py", "sub/t.py", "tests/api.rs", "go/a_test.go",
             "go/a.go", "src/lib.rs"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert testsel.test_files("pytest -q tests/test_x.py::test_a", tmp_path) == ["tests/test_x.py"]
    assert testsel.test_files("pytest tests/", tmp_path) == [
        "tests/api.rs", "tests/conftest.py", "tests/helper_data.txt", "tests/test_x.py", "tests/unit/test_y.py"]
    assert testsel.test_files("python check.py --strict", tmp_path) == ["check.py"]
    assert testsel.test_files("bash scripts/verify.sh && ./scripts/verify.sh", tmp_path) == ["scripts/verify.sh"]
    assert testsel.test_files("python -m unittest pkg.checks.Case.test_a", tmp_path) == ["pkg/checks.py"]
    assert testsel.test_files("cd sub && python -m pytest t.py::x", tmp_path) == ["sub/t.py"]
    assert testsel.test_files("python -m unittest discover -s tests -p 'test_*.py'", tmp_path) == [
        "tests/test_x.py", "tests/unit/test_y.py"]
    assert testsel.test_files("python -m unittest discover tests 'helper_*'", tmp_path) == ["tests/helper_data.txt"]
    assert testsel.test_files("cargo test --test api add", tmp_path) == ["tests/api.rs"]
    assert testsel.test_files("go test -run X ./go", tmp_path) == ["go/a_test.go"]
    assert testsel.test_files("pytest ../outside.py /etc/passwd", tmp_path) == []
    assert testsel.test_files("make test", tmp_path) == []


def test_failing_tests_names_what_the_runners_report():
    output = ("FAILED test_calc.py::test_mul - assert 5 == 6\nERROR tests/test_io.py::test_read\n"
              "test parser::tests::empty ... FAILED\n--- FAIL: TestAdd (0.00s)\n"
              "FAIL: test_a (test_mod.Case.test_a)\nERROR: test_b (test_mod.Case)\n")
    assert failing_tests(output) == ["test_calc.py::test_mul", "tests/test_io.py::test_read", "parser::tests::empty",
                                     "TestAdd", "test_mod.Case.test_a", "test_mod.Case.test_b"]
    assert failing_tests("all good\n") == []


# -- cannot_start ---------------------------------------------------------------------------------

@pytest.fixture
def trees(tmp_path):
    """A checkout with git-ignored files beside its tracked ones, and a fresh worktree of it."""
    checkout = make_repo(tmp_path / "repo", {"calc.py": "from _version import V\n", "test_calc.py": TEST_CALC,
                                             "pkg/__init__.py": "", ".gitignore": "_version.py\n.env\nbuild/\n",
                                             "Cargo.toml": '[package]\nname = "calc"\nversion = "0.1.0"\n'})
    (checkout / "_version.py").write_text("V = 1\n")
    (checkout / ".env").write_text("TOKEN=x\n")
    (checkout / "notes_wip.py").write_text("")  # untracked, not ignored
    worktree = tmp_path / "wt"
    git(checkout, "worktree", "add", "--detach", str(worktree))
    tracked = set(git(checkout, "ls-files").split())
    return checkout, worktree, tracked


def blocker(trees, output, exit_code=1, command="python -m pytest -q"):
    checkout, worktree, tracked = trees
    return cannot_start(command, exit_code, output, worktree=worktree, checkout=checkout, tracked=tracked)


def test_a_module_in_the_checkout_but_untracked_is_the_environment(trees):
    found = blocker(trees, "calc.py:1: in <module>\nE   ModuleNotFoundError: No module named '_version'\n", 2)
    assert found.line == "ModuleNotFoundError: No module named '_version'"
    assert 'copy_ignored = ["_version.py"]' in found.hint
    found = blocker(trees, "ImportError: Failed to import test module: test_calc\n"
                           "ModuleNotFoundError: No module named 'notes_wip'\n")
    assert "notes_wip.py is in your checkout but git does not track it" in found.hint


def test_an_ignored_module_missing_everywhere_points_at_a_build_step(trees):
    (trees[0] / "_version.py").unlink()
    found = blocker(trees, "E   ModuleNotFoundError: No module named '_version'\n", 2)
    assert "git ignores _version.py" in found.hint and "setup" in found.hint


def test_a_missing_ignored_file_the_tests_read(trees):
    found = blocker(trees, "FileNotFoundError: [Errno 2] No such file or directory: '.env'\n")
    assert 'copy_ignored = [".env"]' in found.hint


@pytest.mark.parametrize("output, exit_code", [
    ("E     File \"calc.py\", line 1\nE       def add(a, b)\nE   SyntaxError: expected ':'\n", 2),  # the bug itself
    ("ERROR collecting test_calc.py\nE   ModuleNotFoundError: No module named 'calcs'\n", 2),  # a typo to fix
    ("E   ModuleNotFoundError: No module named 'newmod'\n", 2),  # a module the task may create
    ("E   ImportError: cannot import name 'mul' from 'calc'\n", 2),
    ("ERROR: file or directory not found: tests/test_new.py\n", 4),  # a test file the task may create
    ("bash: line 1: ./check.sh: No such file or directory\n", 127),  # a script the task may create
    ("error[E0425]: cannot find value `x` in this scope\nerror: could not compile `calc` (lib test)\n", 101),
    ("FAILED test_calc.py::test_add - assert -1 == 5\n", 1),
    ("", 1),
])
def test_what_the_task_may_fix_is_attempted(trees, output, exit_code):
    assert blocker(trees, output, exit_code) is None


@pytest.mark.parametrize("output, exit_code, words", [
    ("bash: line 1: pytest: command not found\n", 127, "pytest is not installed"),
    ("/usr/bin/python: No module named pytest\n", 1, "pytest is not installed"),
    ("ERROR: usage: pytest [options]\npytest: error: unrecognized arguments: --cov=calc\n", 4, "plugin"),
    ("error: failed to get `serde` as a dependency of package `calc v0.1.0`\n", 101, "network"),
    ("error: could not compile `openssl-sys` (build script)\n", 101, "openssl-sys does not build here"),
    ("error: linker `cc` not found\n", 101, "not installed"),
    ("ERROR collecting build/lib/test_calc.py\n", 2, "not part of the repository"),
])
def test_what_no_edit_can_fix_stops(trees, output, exit_code, words):
    found = blocker(trees, output, exit_code)
    assert found is not None and words in found.hint


def test_a_passing_run_never_blocks(trees):
    assert blocker(trees, "No module named '_version'", 0) is None


# -- the worktree: copy_ignored, settle, restore --------------------------------------------------

def test_copy_ignored_copies_untracked_files_confined(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, ".gitignore": "*.gen\n.env\ndata/\nlink*\n"})
    (repo / "a.gen").write_text("a")
    (repo / ".env").write_text("SECRET=1")
    (repo / "data").mkdir()
    (repo / "data" / "x.gen").write_text("x")
    (repo / "calc.py").write_text("# my local change\n" + CALC)  # tracked: never copied
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    os.symlink(outside, repo / "link_out")
    os.symlink(tmp_path, repo / "link_dir")
    patterns = ["*.gen", ".env", "data", "calc.py", "link_out", "link_dir/**", "missing.txt"]
    with Worktree(repo, tmp_path / "state", "t1", patterns) as worktree:
        assert sorted(worktree.copied) == [".env", "a.gen", "data/x.gen"]
        assert (worktree.path / ".env").read_text() == "SECRET=1"
        assert (worktree.path / "data" / "x.gen").read_text() == "x"
        assert (worktree.path / "calc.py").read_text() == CALC
        assert not (worktree.path / "link_out").exists() and not (worktree.path / "link_dir").exists()
        worktree.settle()
        assert worktree.diff() == ""


def test_settle_keeps_setup_outputs_out_of_the_patch(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC})
    with Worktree(repo, tmp_path / "state", "t2") as worktree:
        (worktree.path / "BUILD-INFO").write_text("built")
        worktree.settle()
        (worktree.path / "calc.py").write_text(CALC.replace("a - b", "a + b"))
        patch = worktree.diff()
    assert "BUILD-INFO" not in patch and "+    return a + b" in patch


def test_reset_undoes_one_answer_and_keeps_the_attempts_before_it(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC, ".gitignore": "*.gen\n"})
    (repo / "v.gen").write_text("copied")
    with Worktree(repo, tmp_path / "state", "t3", ["v.gen"]) as worktree:
        first = CALC.replace("a - b", "b - a")
        (worktree.path / "calc.py").write_text(first)  # what an earlier attempt left
        before = worktree.snapshot()
        answer = ("calc.py\n```\n<<<<<<< SEARCH\n    return b - a\n=======\n    return a + b\n>>>>>>> REPLACE\n```\n"
                  "test_calc.py\n```\n<<<<<<< SEARCH\n    assert add(2, 3) == 5\n=======\n    assert True\n"
                  ">>>>>>> REPLACE\n```\nnew/dir/test_more.py\n```\n<<<<<<< SEARCH\n=======\nx = 1\n"
                  ">>>>>>> REPLACE\n```\nv.gen\n```\n<<<<<<< SEARCH\ncopied\n=======\nchanged\n>>>>>>> REPLACE\n```\n")
        applied = apply_answer(worktree.path, answer, "auto", ["calc.py"])
        assert set(applied.files) == {"calc.py", "test_calc.py", "new/dir/test_more.py", "v.gen"}
        worktree.reset_to(before)
        assert (worktree.path / "calc.py").read_text() == first
        assert (worktree.path / "test_calc.py").read_text() == TEST_CALC
        assert (worktree.path / "v.gen").read_text() == "copied"
        assert not (worktree.path / "new").exists()


# -- settings -------------------------------------------------------------------------------------

def test_setup_and_copy_ignored_settings(tmp_path):
    (tmp_path / "gvpie.toml").write_text('setup = "make gen"\ncopy_ignored = ["src/pkg/_version.py", ".env"]\n')
    settings = load_settings({"home": str(tmp_path)}, env={})
    assert settings.setup == "make gen" and settings.copy_ignored == ("src/pkg/_version.py", ".env")
    settings = load_settings({"home": str(tmp_path)}, env={"GVPIE_COPY_IGNORED": "a.py, .env,", "GVPIE_SETUP": "x"})
    assert settings.copy_ignored == ("a.py", ".env") and settings.setup == "x"
    assert load_settings({"home": str(tmp_path / "none")}, env={}).copy_ignored == ()
    for bad in ('copy_ignored = ["../secrets"]', 'copy_ignored = ["/etc/passwd"]', "copy_ignored = [1]",
                "copy_ignored = 3"):
        (tmp_path / "gvpie.toml").write_text(bad + "\n")
        with pytest.raises(ConfigError, match="copy_ignored"):
            load_settings({"home": str(tmp_path)}, env={})
