"""The inbox parser and the state store: the user's file is read, never rewritten; state is exact."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from auto_gvpie.tasks import (InboxError, StateStore, append_task, infer_kind, parse_inbox, read_inbox,
                              runnable)


def test_array_then_appended_objects_and_json_lines():
    text = ('[\n  {"id": "a", "title": "first"},\n  {"title": "second", "priority": 9}\n]\n'
            '{"title": "appended with echo"}\n{"title": "another line", "kind": "pixel"}\n')
    tasks = parse_inbox(text)
    assert [t.title for t in tasks] == ["first", "second", "appended with echo", "another line"]
    assert tasks[0].id == "a" and tasks[1].priority == 9 and tasks[3].kind == "pixel"
    assert [t.line for t in tasks] == [2, 3, 5, 6]


def test_defaults_follow_the_contract():
    (task,) = parse_inbox('{"title": "fix the adder bug in calc.py"}')
    assert (task.status, task.priority, task.max_attempts, task.depends_on, task.kind) == ("pending", 5, 3, (), "code")
    assert task.kind_inferred and task.id.startswith("fix-the-adder-bug")


@pytest.mark.parametrize("text, where", [
    ('[{"title": "a"},\n {"title": "b"', "auto_tasks.json:2:15: Expecting ',' delimiter"),
    ('[{"title": "a"},\n {"title": "b"}', "auto_tasks.json:2:16: unterminated array"),
    ('[{"title": "a"}]\n{"title": oops}', "auto_tasks.json:2:11: Expecting value"),
    ('{"title": "a"}\n42\n', "auto_tasks.json:2:1: expected a task object"),
])
def test_unparseable_input_names_line_and_column(text, where):
    with pytest.raises(InboxError) as err:
        parse_inbox(text, "auto_tasks.json")
    assert str(err.value).startswith(where)


@pytest.mark.parametrize("task, path", [
    ({"description": "no title"}, "[0].title: required"),
    ({"title": "x", "priority": "high"}, "[0].priority: must be an integer"),
    ({"title": "x", "priority": True}, "[0].priority: must be an integer"),
    ({"title": "x", "kind": "video"}, "[0].kind: must be one of code, pixel"),
    ({"title": "x", "status": "later"}, "[0].status: must be one of"),
    ({"title": "x", "tests": [1]}, "[0].tests: must be a list of non-empty strings"),
    ({"title": "x", "colour": "red"}, "[0].colour: unknown field"),
    ({"title": "x", "max_attempts": 0}, "[0].max_attempts: must be between 1 and 100"),
])
def test_bad_fields_name_the_json_path(task, path):
    with pytest.raises(InboxError, match=path.replace("[", r"\[").replace("]", r"\]")):
        parse_inbox(json.dumps([task]))


def test_duplicate_explicit_ids_are_an_error_but_identical_untitled_tasks_both_count():
    with pytest.raises(InboxError, match="duplicate id 'a'"):
        parse_inbox('[{"id": "a", "title": "x"}, {"id": "a", "title": "y"}]')
    tasks = parse_inbox('{"title": "same"}\n{"title": "same"}\n')
    assert len({t.id for t in tasks}) == 2


def test_kind_inference():
    assert infer_kind("Draw a boot screen icon", "") == "pixel"
    assert infer_kind("Render a logo", "pixel art with colours") == "pixel"
    assert infer_kind("Fix the off-by-one in parse()", "the test fails") == "code"


def test_ordering_priority_then_file_order_and_dependencies(tmp_path):
    tasks = parse_inbox(json.dumps([
        {"id": "low", "title": "low", "priority": 1},
        {"id": "a", "title": "a"},
        {"id": "needs-a", "title": "b", "priority": 10, "depends_on": ["a"]},
        {"id": "high", "title": "c", "priority": 7},
        {"id": "b", "title": "b2"},
    ]))
    store = StateStore(tmp_path)
    store.sync(tasks)
    ready, why = runnable(tasks, store.all())
    assert [t.id for t in ready] == ["high", "a", "b", "low"]
    assert why == {"needs-a": "waiting for a"}
    assert store.claim("a", "w1")
    store.finish("a", "w1", "done", None, [])
    ready, why = runnable(tasks, store.all())
    assert ready[0].id == "needs-a" and not why


def test_failed_dependency_blocks(tmp_path):
    tasks = parse_inbox('[{"id": "a", "title": "a"}, {"id": "b", "title": "b", "depends_on": ["a"]}]')
    store = StateStore(tmp_path)
    store.sync(tasks)
    store.claim("a", "w")
    store.finish("a", "w", "failed", "boom", [])
    _, why = runnable(tasks, store.all())
    assert why == {"b": "dependency a failed"}


def test_a_task_is_claimed_once_and_finished_tasks_stay_finished(tmp_path):
    tasks = parse_inbox('{"id": "t", "title": "t"}')
    first, second = StateStore(tmp_path), StateStore(tmp_path)
    first.sync(tasks)
    assert first.claim("t", "w1")
    assert not second.claim("t", "w2")
    first.finish("t", "w1", "done", None, ["x.patch"])
    second.sync(tasks)  # seeing the file again must not reset it
    assert second.get("t").status == "done" and second.get("t").artifacts == ["x.patch"]
    assert not second.claim("t", "w2")


def test_dead_lease_goes_back_to_pending_with_attempts_kept(tmp_path):
    store = StateStore(tmp_path)
    store.sync(parse_inbox('{"id": "t", "title": "t"}'))
    assert store.claim("t", "w1")
    store.record_attempt("t", 1, "tests_failed", "boom")
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.db.execute("UPDATE tasks SET lease_pid=? WHERE id='t'", (dead.pid,))
    assert store.recover_stale() == ["t"]
    state = store.get("t")
    assert (state.status, state.attempts, state.lease_owner) == ("pending", 1, None)


def _add_many(path: str, start: int) -> None:
    for i in range(start, start + 25):
        append_task(Path(path), {"title": f"task {i}"})


def test_concurrent_adds_and_raw_appends_lose_nothing(tmp_path):
    inbox = tmp_path / "auto_tasks.json"
    inbox.write_text('[\n  {"title": "original"}\n]')  # no trailing newline: appends must still parse
    procs = [multiprocessing.Process(target=_add_many, args=(str(inbox), n * 100)) for n in range(3)]
    for p in procs:
        p.start()
    for i in range(25):
        with open(inbox, "a") as f:  # what `echo '{...}' >> auto_tasks.json` does
            f.write(json.dumps({"title": f"raw {i}"}) + "\n")
    for p in procs:
        p.join()
    titles = [t.title for t in read_inbox(inbox)]
    assert len(titles) == 1 + 75 + 25 == len(set(titles))
    assert inbox.read_text().startswith('[\n  {"title": "original"}\n]')


def test_readonly_store_on_a_fresh_home_creates_nothing(tmp_path):
    store = StateStore(tmp_path / ".gvpie", readonly=True)
    assert store.all() == {}
    assert not (tmp_path / ".gvpie").exists()
