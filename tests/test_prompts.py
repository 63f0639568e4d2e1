"""Tests for auto_gvpie.prompts: what reaches the model, confined to the repository and fitted to its window."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CALC, TEST_CALC, git, make_repo

from auto_gvpie import prompts
from auto_gvpie.prompts import Attempt, code_prompt, pixel_prompt, read_inputs
from auto_gvpie.inbox import Task

SERVICE_FILES = ("auto_tasks.json", "gvpie.toml", ".gvpie", "artifacts", "lancedb")
MARKER = "OUTSIDE-SECRET-7f3a"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"


def count(text: str) -> int:
    return len(text) // 4


def task(**fields) -> Task:
    return Task(**{"id": "t1", "title": "Fix add", "kind": "code", **fields})


def prompt_text(prompt) -> str:
    return "\n".join(message["content"] for message in prompt.messages)


def ask(worktree: Path, the_task: Task, context_window: int = 8192, answer_tokens: int = 1024, **kwargs):
    return code_prompt(the_task, worktree, "", [], "auto", context_window, answer_tokens, count, **kwargs)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """A repository two levels below a file it must never show, with committed traps in it."""
    (tmp_path / "outside.txt").write_text(f"{MARKER}\n")
    repo = make_repo(tmp_path / "work" / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC,
                                                  "src/mod.py": "X = 1\n", "auto_tasks.json": "[]\n",
                                                  "gvpie.toml": "model = 'm'\n"})
    (repo / "logo.png").write_bytes(PNG)
    (repo / "latin1.txt").write_bytes(b"caf\xe9\n")
    (repo / "passwd").symlink_to("/etc/passwd")
    (repo / "up").symlink_to(tmp_path)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "traps")
    return repo


def test_inputs_outside_the_repository_are_refused_and_reported(world, tmp_path):
    inputs = ("calc.py", str(tmp_path / "outside.txt"), "../../outside.txt", "passwd", "up/outside.txt",
              ".git/config", "src", "logo.png", "latin1.txt", "auto_tasks.json", "new_module.py")
    prompt = ask(world, task(inputs=inputs), protected=SERVICE_FILES)
    text = prompt_text(prompt)
    assert MARKER not in text
    assert "root:" not in text
    assert "[core]" not in text and "repositoryformatversion" not in text
    assert "PNG" not in text and "caf" not in text and "[]" not in text
    assert "return a - b" in text
    assert "new_module.py\n(this file does not exist yet; create it)" in text
    assert len(prompt.warnings) == len(inputs) - 2
    warnings = dict(zip([1, 2, 3, 4, 5, 6, 7, 8, 9], prompt.warnings))
    assert warnings[1] == (f"inputs[1] '{tmp_path / 'outside.txt'}': refused, {tmp_path / 'outside.txt'} is an "
                           f"absolute path; write paths relative to the repository root")
    assert warnings[2].startswith("inputs[2] '../../outside.txt': refused, ") and "leaves the repository" in warnings[2]
    assert warnings[3].startswith("inputs[3] 'passwd': refused, ") and "points outside the repository" in warnings[3]
    assert "points outside the repository" in warnings[4]
    assert "inside .git/" in warnings[5]
    assert warnings[6] == "inputs[6] 'src': refused, src is a directory, not a file"
    assert warnings[7] == "inputs[7] 'logo.png': a binary file, not shown"
    assert warnings[8] == "inputs[8] 'latin1.txt': a binary file, not shown"
    assert "auto_tasks.json is Auto-GVPIE's own file" in warnings[9]
    for path in ("../../outside.txt", "passwd", "src", "logo.png", "auto_tasks.json"):
        assert f"{path}\n```" not in text and f"{path}\n(this file" not in text


def test_a_refused_input_is_not_the_edit_format_example(world):
    prompt = ask(world, task(inputs=("passwd", "src/mod.py")))
    system = prompt.messages[0]["content"]
    assert "src/mod.py" in system and "passwd" not in system


def test_test_commands_show_only_files_inside_the_repository(world, tmp_path):
    commands = ("cat /etc/passwd", "pytest ../../outside.txt", f"cat {tmp_path / 'outside.txt'}",
                "python passwd", "cat up/outside.txt", "cat .git/config", "cat auto_tasks.json gvpie.toml",
                "cat logo.png", "pytest -q test_calc.py::test_add", "ls src")
    assert prompts.test_files(world, commands, ("calc.py",), SERVICE_FILES) == {"test_calc.py": TEST_CALC}
    text = prompt_text(ask(world, task(inputs=("calc.py",), tests=commands), protected=SERVICE_FILES))
    assert MARKER not in text and "root:" not in text and "[core]" not in text and "model = 'm'" not in text
    assert "Test file (read-only, do not edit) test_calc.py" in text


def test_an_input_is_shown_once_even_when_a_test_command_names_it(world):
    text = prompt_text(ask(world, task(inputs=("./test_calc.py",), tests=("pytest test_calc.py",))))
    assert text.count("def test_mul") == 1


def test_read_inputs_keys_files_by_their_clean_path(world):
    assert read_inputs(world, ["./src//mod.py"]) == ({"src/mod.py": "X = 1\n"}, [])


def test_small_prompt_is_not_shortened(world):
    prompt = ask(world, task(inputs=("calc.py",), description="Make add() add."))
    assert prompt.left_out == [] and prompt.warnings == []
    assert "# Task: Fix add\n" in prompt_text(prompt) and "Make add() add." in prompt_text(prompt)


@pytest.mark.parametrize("field", ["title", "description"])
@pytest.mark.parametrize("window", [2048, 8192, 32768])
def test_a_huge_task_text_is_shortened_to_fit(world, field, window):
    huge = "START " + "lorem ipsum dolor " * 60_000 + " END"  # about 1 MB on one line
    answer_tokens = 512
    the_task = task(inputs=("calc.py",), tests=("pytest -q test_calc.py",), **{field: huge})
    history = [Attempt(1, "calc.py\n```\nx\n```", "refused", "Your edit was refused: " + "why " * 5000)]
    prompt = code_prompt(the_task, world, "## Relevant memory\n" + "m " * 5000, history, "auto", window,
                         answer_tokens, count, failing="E assert 1 == 5\n" * 1000)
    text = prompt_text(prompt)
    assert prompt.tokens == sum(count(m["content"]) for m in prompt.messages)
    assert prompt.tokens <= window - answer_tokens
    assert "START" in text and "END" in text and "return a - b" in text
    assert any(f"from the middle of the task {field}" in item for item in prompt.left_out)
    assert f"characters of the task {field} left out to fit the context window" in text


def test_many_inputs_still_fit(world):
    for n in range(200):
        (world / f"m{n}.py").write_text(f"VALUE_{n} = {n}\n" * 100)
    prompt = ask(world, task(inputs=tuple(f"m{n}.py" for n in range(200))), context_window=4096, answer_tokens=512)
    assert prompt.tokens <= 4096 - 512
    assert "VALUE_0 =" in prompt_text(prompt)


def test_pixel_prompt_fits_a_huge_description():
    huge = "draw " * 200_000
    history = [Attempt(1, "{}", "invalid_program", "ops[0].op: unknown " * 2000)]
    prompt = pixel_prompt(task(kind="pixel", description=huge), "memory " * 2000, history, 4096, 1024, count)
    assert prompt.tokens == sum(count(m["content"]) for m in prompt.messages)
    assert prompt.tokens <= 4096 - 1024
    assert prompt.edit_format is None and prompt.left_out
    # Without the model's numbers (the defaults), a megabyte is still never sent.
    default = pixel_prompt(task(kind="pixel", description=huge), "", [])
    assert len(prompt_text(default)) < 8192 * 4


def test_pixel_prompt_keeps_a_small_task_whole():
    prompt = pixel_prompt(task(kind="pixel", title="Boot screen", description="A green GVPIE logo."), "", [])
    assert prompt.left_out == []
    assert "# Task: Boot screen\n" in prompt_text(prompt) and "A green GVPIE logo." in prompt_text(prompt)


DOCSTRING_FENCES = ('"""Helpers.\n\nExample:\n\n```python\nfrom helpers import double\ndouble(2)\n```\n"""\n\n\n'
                    'def double(x):\n    """Twice x.\n\n    ```python\n    >>> double(2)\n    4\n    ```\n    """\n'
                    '    return 2 * x\n')


@pytest.mark.parametrize("setting", ["auto", "whole", "search_replace", "udiff"])
def test_a_file_with_fence_lines_is_shown_with_a_longer_fence_and_the_answer_asked_for_in_it(world, setting):
    """Issue 11: a ``` line inside a file shown in a ``` fence ended the block for the model."""
    (world / "helpers.py").write_text(DOCSTRING_FENCES)
    the_task = task(inputs=("helpers.py", "calc.py"), tests=("pytest -q test_calc.py",))
    prompt = code_prompt(the_task, world, "", [], setting, 8192, 1024, count)
    system, user = prompt.messages[0]["content"], prompt.messages[1]["content"]
    assert f"helpers.py\n````python\n{DOCSTRING_FENCES}````\n" in user
    assert "calc.py\n```python\n" in user and "test_calc.py\n```python\n" in user  # no ``` inside: plain fences
    assert "fence your answer with ```` too, never ```" in system
    assert "\n````" in system


def test_the_longest_fence_of_any_shown_file_is_asked_for(world):
    (world / "notes.md").write_text("# Notes\n\n`````\nfour backticks: ````\n`````\n")
    prompt = ask(world, task(inputs=("calc.py", "notes.md")))
    assert "notes.md\n``````markdown\n" in prompt.messages[1]["content"]
    assert "fence your answer with `````` too" in prompt.messages[0]["content"]
    assert "fence your answer with" not in prompt_text(ask(world, task(inputs=("calc.py",))))


def test_fence_helper_uses_the_shortest_safe_fence():
    assert prompts._fence("a.py", "x = 1\n") == "a.py\n```python\nx = 1\n```\n"
    assert prompts._fence("a.py", "x = 1") == "a.py\n```python\nx = 1\n```\n"
    assert prompts._fence("a.md", "```\ncode\n```") == "a.md\n````markdown\n```\ncode\n```\n````\n"
