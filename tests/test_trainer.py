"""The trainer's books (`--status --scores`): scores per task and skill from a real scripted run (the
real CLI, a real git repo, a loopback OpenAI-compatible server), the trend, the difficulty rule and
the PNG chart."""

from __future__ import annotations

import json

from PIL import Image

from conftest import FIX, FIX_TASK, WRONG, run_cli, write_tasks
from llm_server import LLMServer

from auto_gvpie.inbox import Task
from auto_gvpie.state import TaskState
from auto_gvpie.trainer import infer_tags, score

PICTURE = json.dumps({"kind": "pixel_program", "version": 1, "name": "sq", "canvas": {"width": 8, "height": 8},
                      "palette": {}, "ops": [{"op": "FILL", "color": [0, 0, 200]}]})


def test_scores_of_a_real_run_by_task_and_skill_with_a_chart(home, repo):
    write_tasks(home, [
        {**FIX_TASK, "id": "fix-twice"},
        {"id": "square", "kind": "pixel", "title": "A small square", "tags": ["icons"]},
        {**FIX_TASK, "id": "never", "max_attempts": 2, "depends_on": ["fix-twice"]},
        {"id": "skipped", "title": "Not for the worker", "kind": "pixel", "status": "cancelled"},
    ])
    # fix-twice: wrong then right; square: first try; never: the fix is in already, so WRONG breaks it twice.
    with LLMServer([WRONG, FIX, PICTURE, WRONG, WRONG]) as server:
        out = run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server.url, "--no-memory", "--once")
    assert out.returncode == 1, out.stderr  # one task failed
    shown = run_cli("--home", str(home), "--status", "--scores", "--json")
    assert shown.returncode == 0, shown.stderr
    books = json.loads(shown.stdout)
    by_id = {t["id"]: t for t in books["tasks"]}
    assert set(by_id) == {"fix-twice", "square", "never"}  # the cancelled task is not the worker's score
    assert (by_id["fix-twice"]["status"], by_id["fix-twice"]["attempts"], by_id["fix-twice"]["score"]) == ("done", 2, 0.75)
    assert by_id["square"]["score"] == 1.0 and by_id["square"]["tags"] == ["icons"]
    assert by_id["never"]["score"] == 0.0 and by_id["never"]["tags"] == ["code", "python", "area:."]
    assert by_id["fix-twice"]["seconds"] > 0 and by_id["never"]["seconds"] > 0  # tests ran: time was spent
    skills = {s["tag"]: s for s in books["skills"]}
    assert (skills["code"]["tasks"], skills["code"]["done"], skills["code"]["attempts"]) == (2, 1, 2.0)
    assert skills["icons"]["success_rate"] == 1.0
    assert books["trend"][-1] == round(2 / 3, 3) and books["difficulty"] == "same"
    with Image.open(books["chart"]) as png:
        assert png.size == (640, 280)
        assert png.getpixel((640 // 2, 280 - 37)) != (250, 250, 250)  # a bar is drawn near the middle
    text = run_cli("--home", str(home), "--status", "--scores")
    assert "3 finished task(s); next task: same" in text.stdout and "icons" in text.stdout


def _finished(n_done: int, n_failed: int) -> tuple[list[Task], dict[str, TaskState]]:
    tasks, states = [], {}
    for i in range(n_done + n_failed):
        task = Task(f"t{i}", f"task {i}", "code", inputs=("src/pkg/mod.rs",))
        tasks.append(task)
        states[task.id] = TaskState(task.id, "done" if i < n_done else "failed", attempts=1, updated=1000.0 + i)
    return tasks, states


def test_the_next_task_is_larger_after_successes_and_smaller_after_failures():
    assert score(*_finished(5, 0), {}).difficulty == "larger"
    assert score(*_finished(0, 4), {}).difficulty == "smaller"
    few = score(*_finished(2, 0), {})
    assert few.difficulty == "same" and "3 are needed" in few.why
    assert infer_tags(Task("x", "x", "code", inputs=("src/pkg/mod.rs",))) == ("code", "rust", "area:src")


def test_a_skill_not_practised_for_a_while_is_due_again():
    tasks, states = _finished(12, 0)
    tasks[0] = Task("t0", "task 0", "pixel", tags=("fonts",))
    assert score(tasks, states, {}).due == ["fonts"]


def test_scores_without_status_is_a_usage_error(home):
    out = run_cli("--home", str(home), "--scores")
    assert out.returncode == 2 and "--scores goes with --status" in out.stderr
