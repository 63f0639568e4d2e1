"""Issue 11, items 5 and 6, end to end: the real CLI, real git repositories, the scripted loopback LLM.

No false passes: the whole test files a task's commands select must pass too, and an answer that edits
a test file the task does not list in `inputs` is refused. The worktree must be able to run the tests:
git-ignored files the tests need are copied (`copy_ignored`) or built (`setup`), and a baseline that
cannot even start stops the queue with a plain message instead of burning attempts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import CALC, TEST_CALC, make_repo, run_cli, write_tasks
from llm_server import LLMServer

FIX = "calc.py\n```python\ndef add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n```\n"
# add() fixed, mul() broken: the selected test passes, its neighbour in the same file fails.
FIX_ADD_BREAK_MUL = "calc.py\n```python\ndef add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a + b\n```\n"
# "Fixes" the test instead of the code, and touches calc.py in the same answer.
EDIT_THE_TEST = ("calc.py\n```\n<<<<<<< SEARCH\ndef mul(a, b):\n=======\ndef mul(a, b):  # untouched really\n"
                 ">>>>>>> REPLACE\n```\n\ntest_calc.py\n```\n<<<<<<< SEARCH\n    assert add(2, 3) == 5\n=======\n"
                 "    assert add(2, 3) == -1\n>>>>>>> REPLACE\n```\n")
NEW_CONFTEST = ("conftest.py\n```\n<<<<<<< SEARCH\n=======\nimport pytest\n\n\n@pytest.fixture(autouse=True)\n"
                "def _skip():\n    pytest.skip('no')\n>>>>>>> REPLACE\n```\n")

SELECTED = {"id": "fix-add", "title": "Fix add() in calc.py", "kind": "code", "inputs": ["calc.py"],
            "tests": ["python -m pytest -q test_calc.py::test_add"], "max_attempts": 2}


def cli(home: Path, repo: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli("--home", str(home), "--repo", str(repo), "--llm-url", url, "--no-memory", *args)


def status(home: Path) -> dict:
    out = run_cli("--home", str(home), "--status", "--json")
    assert out.returncode == 0, out.stderr
    return {t["id"]: t for t in json.loads(out.stdout)["tasks"]}


def user_prompt(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")


def attempt(home: Path, task_id: str, number: int) -> dict:
    return json.loads((home / "artifacts" / f"{task_id}.attempt-{number}.json").read_text())


# -- item 6: no false passes ------------------------------------------------------------------------

def test_passing_the_selected_test_while_breaking_its_file_is_not_accepted(home, repo):
    write_tasks(home, [SELECTED])
    with LLMServer([FIX_ADD_BREAK_MUL, FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    (task,) = json.loads(out.stdout)["tasks"]
    assert task["status"] == "done" and task["attempts"] == 2
    first = attempt(home, "fix-add", 1)
    assert first["outcome"] == "tests_failed"
    second = user_prompt(server.requests[1])
    assert "passes the selected test but breaks other tests in the same file" in second
    assert "test_calc.py::test_mul" in second and "assert 5 == 6" in second  # the whole file's output
    assert "return a * b" in (repo / "calc.py").read_text()  # the real fix reached the checkout


def test_the_same_answer_fails_the_task_when_it_is_all_there_is(home, repo):
    write_tasks(home, [{**SELECTED, "max_attempts": 1}])
    with LLMServer([FIX_ADD_BREAK_MUL]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 1
    task = status(home)["fix-add"]
    assert task["status"] == "failed"
    assert "breaks other tests in the same file: test_calc.py::test_mul" in task["error"]
    assert (repo / "calc.py").read_text() == CALC  # nothing reached the checkout


def test_tests_already_failing_in_the_same_file_are_not_blamed_on_the_change(tmp_path, home):
    broken = TEST_CALC + "\n\ndef test_unrelated():\n    assert False, 'broken before'\n"
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": broken, ".gitignore": "__pycache__/\n"})
    write_tasks(home, [SELECTED])
    with LLMServer([FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["attempts"] == 1


def test_an_answer_that_edits_the_test_is_refused_and_nothing_is_applied(home, repo):
    write_tasks(home, [{**SELECTED, "tests": ["python -m pytest -q test_calc.py"]}])
    with LLMServer([EDIT_THE_TEST, FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["attempts"] == 2
    first = attempt(home, "fix-add", 1)
    assert first["outcome"] == "refused"
    second = user_prompt(server.requests[1])
    assert ("test_calc.py is a test file the task does not list in inputs; the tests are the judge, "
            "change the code under test instead") in second
    # Nothing of the refused answer stayed, not even its edit to calc.py.
    patch = (home / "artifacts" / "fix-add.patch").read_text()
    assert "untouched really" not in patch and "test_calc.py" not in patch
    assert (repo / "test_calc.py").read_text() == TEST_CALC


def test_a_new_conftest_that_skips_everything_is_refused(home, repo):
    write_tasks(home, [SELECTED])
    with LLMServer([NEW_CONFTEST, FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert attempt(home, "fix-add", 1)["outcome"] == "refused"
    assert "conftest.py is a test file the task does not list in inputs" in user_prompt(server.requests[1])
    assert not (repo / "conftest.py").exists()
    assert "conftest" not in (home / "artifacts" / "fix-add.patch").read_text()


def test_a_test_file_listed_in_inputs_may_be_edited(home, repo):
    fix_test = ("test_calc.py\n```\n<<<<<<< SEARCH\n    assert add(2, 3) == 5\n=======\n"
                "    assert add(2, 3) == -1\n>>>>>>> REPLACE\n```\n")
    write_tasks(home, [{**SELECTED, "title": "The add test is wrong: add subtracts by design",
                        "inputs": ["calc.py", "test_calc.py"]}])
    with LLMServer([fix_test]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert "== -1" in (repo / "test_calc.py").read_text()


# -- item 5: the worktree must be able to run the tests ----------------------------------------------

VERSIONED = {
    "calc.py": "from _version import VERSION\n\n\n" + CALC,
    "test_calc.py": TEST_CALC,
    ".gitignore": "__pycache__/\n_version.py\n",
}
VERSION_TASK = {**SELECTED, "tests": ["python -m pytest -q test_calc.py"]}


@pytest.fixture
def versioned(tmp_path: Path) -> Path:
    """A project whose code imports a `_version.py` the build writes and git ignores."""
    repo = make_repo(tmp_path / "repo", VERSIONED)
    (repo / "_version.py").write_text("VERSION = '1.0'\n")  # as a build left it in the user's checkout
    return repo


def test_tests_needing_an_ignored_file_stop_the_queue_with_a_plain_message(home, versioned):
    write_tasks(home, [VERSION_TASK, {**VERSION_TASK, "id": "second", "title": "another"}])
    with LLMServer([FIX]) as server:
        out = cli(home, versioned, server.url, "--once", "--json")
        assert server.requests == []  # no attempt was burnt
    assert out.returncode == 2
    assert "the tests cannot run in a fresh worktree" in out.stderr
    assert "No module named '_version'" in out.stderr
    assert 'copy_ignored = ["_version.py"]' in out.stderr and "setup" in out.stderr
    assert {t["status"] for t in status(home).values()} == {"pending"}
    assert status(home)["fix-add"]["attempts"] == 0
    shown = run_cli("--home", str(home), "--status").stdout
    assert "the tests cannot run in a fresh worktree" in shown and "_version" in shown
    assert not (home / ".gvpie" / "worktrees" / "fix-add").exists()


def test_a_build_output_missing_everywhere_points_at_setup(home, versioned):
    (versioned / "_version.py").unlink()  # never built in the checkout either
    write_tasks(home, [VERSION_TASK])
    with LLMServer([FIX]) as server:
        out = cli(home, versioned, server.url, "--once")
        assert server.requests == []
    assert out.returncode == 2
    assert "git ignores _version.py" in out.stderr and "setup" in out.stderr
    assert status(home)["fix-add"]["status"] == "pending"


def test_copy_ignored_brings_the_file_and_the_task_is_done(home, versioned):
    (home / "gvpie.toml").write_text('copy_ignored = ["_version.py"]\n')
    write_tasks(home, [VERSION_TASK])
    with LLMServer([FIX]) as server:
        out = cli(home, versioned, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["status"] == "done"
    patch = (home / "artifacts" / "fix-add.patch").read_text()
    assert "+    return a + b" in patch and "_version" not in patch.split("@@", 1)[0]
    assert (versioned / "_version.py").read_text() == "VERSION = '1.0'\n"


def test_setup_builds_the_file_and_the_task_is_done(home, versioned):
    (versioned / "_version.py").unlink()
    (home / "gvpie.toml").write_text('setup = "echo VERSION = 1 > _version.py"\n')
    write_tasks(home, [VERSION_TASK])
    with LLMServer([FIX]) as server:
        out = cli(home, versioned, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["status"] == "done"
    assert "_version.py" not in (home / "artifacts" / "fix-add.patch").read_text()
    assert not (versioned / "_version.py").exists()  # built in the worktree only


def test_setup_from_the_environment_and_untracked_output_stay_out_of_the_patch(home, versioned):
    (versioned / "_version.py").unlink()
    write_tasks(home, [VERSION_TASK])
    setup = "echo VERSION = 1 > _version.py && echo built > BUILD-INFO.txt"  # the second is not ignored
    with LLMServer([FIX]) as server:
        out = run_cli("--home", str(home), "--repo", str(versioned), "--llm-url", server.url, "--no-memory",
                      "--once", env={"GVPIE_SETUP": setup})
    assert out.returncode == 0, out.stderr
    patch = (home / "artifacts" / "fix-add.patch").read_text()
    assert "BUILD-INFO" not in patch and "+    return a + b" in patch
    assert not (versioned / "BUILD-INFO.txt").exists()


def test_a_failing_setup_stops_the_queue_and_leaves_the_task_pending(home, repo):
    (home / "gvpie.toml").write_text("setup = \"echo 'cannot build: no compiler' >&2; exit 3\"\n")
    write_tasks(home, [SELECTED])
    with LLMServer([FIX]) as server:
        out = cli(home, repo, server.url, "--once")
        assert server.requests == []
    assert out.returncode == 2
    assert "setup command failed" in out.stderr and "exit code 3" in out.stderr
    assert "cannot build: no compiler" in out.stderr
    assert status(home)["fix-add"]["status"] == "pending"
    assert "setup command failed" in run_cli("--home", str(home), "--status").stdout


def test_a_test_tool_that_is_not_installed_stops_the_queue(home, repo):
    write_tasks(home, [{**SELECTED, "tests": ["no-such-test-tool-xyz --check"]}])
    with LLMServer([FIX]) as server:
        out = cli(home, repo, server.url, "--once")
        assert server.requests == []
    assert out.returncode == 2
    assert "no-such-test-tool-xyz: command not found" in out.stderr and "not installed" in out.stderr
    assert status(home)["fix-add"]["status"] == "pending"


def test_a_syntax_error_in_the_tracked_module_is_the_task_not_the_environment(tmp_path, home):
    broken = CALC.replace("def add(a, b):", "def add(a, b)")
    repo = make_repo(tmp_path / "repo", {"calc.py": broken, "test_calc.py": TEST_CALC, ".gitignore": "__pycache__/\n"})
    write_tasks(home, [{**SELECTED, "title": "calc.py does not even import",
                        "tests": ["python -m pytest -q test_calc.py"]}])
    with LLMServer([FIX]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
        assert len(server.requests) == 1
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["status"] == "done"
    assert "SyntaxError" in user_prompt(server.requests[0])  # the baseline failure was shown to the model


def test_a_module_the_task_is_to_create_is_attempted(tmp_path, home):
    repo = make_repo(tmp_path / "repo", {"test_calc.py": TEST_CALC, ".gitignore": "__pycache__/\n"})
    create = "calc.py\n```\n<<<<<<< SEARCH\n=======\n" + CALC.replace("a - b", "a + b") + ">>>>>>> REPLACE\n```\n"
    write_tasks(home, [{**SELECTED, "title": "Create calc.py with add and mul", "inputs": [],
                        "tests": ["python -m pytest -q test_calc.py"]}])
    with LLMServer([create]) as server:
        out = cli(home, repo, server.url, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["status"] == "done"
    assert "return a + b" in (repo / "calc.py").read_text()
