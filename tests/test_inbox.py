"""The inbox: the user's file is read (incrementally), never rewritten; appends never lose a task."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from auto_gvpie.inbox import Inbox, InboxError, append_task, infer_kind, parse_inbox, read_inbox, runnable
from auto_gvpie.state import StateStore


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


@pytest.mark.parametrize("text, where", [
    ("[" * 100_000, "auto_tasks.json:1:514: nested deeper than 512 levels"),
    ('[{"title": "x", "priority": ' + "9" * 5000 + "}]", "auto_tasks.json:1:29: a number of 5000 characters"),
    ('{"title": "ok"}\n{"title": "\\ud800"}\n', "auto_tasks.json:2:1: [1].title: a lone surrogate"),
    ('{"title": "x", "test_timeout": 1e999}', "auto_tasks.json:1:32: the number 1e999 is too large"),
    ('{"title": "x", "priority": NaN}', "auto_tasks.json:1:28: NaN is not valid JSON"),
])
def test_hostile_inboxes_get_a_message_with_the_place_not_a_traceback(tmp_path, text, where):
    path = tmp_path / "auto_tasks.json"
    path.write_text(text)
    with pytest.raises(InboxError) as err:
        read_inbox(path)
    assert str(err.value).startswith(f"{path}:{where.split(':', 1)[1]}"), str(err.value)[:300]


def test_a_byte_order_mark_is_accepted_and_a_directory_is_named(tmp_path):
    path = tmp_path / "auto_tasks.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"title": "from notepad"}]).encode())
    assert [t.title for t in read_inbox(path)] == ["from notepad"]
    append_task(path, {"title": "added after"})
    assert [t.title for t in read_inbox(path)] == ["from notepad", "added after"]
    with pytest.raises(InboxError, match="is a directory, not a task file"):
        read_inbox(tmp_path)
    with pytest.raises(InboxError, match="is a directory, not a task file"):
        append_task(tmp_path, {"title": "x"})


def test_add_refuses_text_that_is_not_text(tmp_path):
    with pytest.raises(InboxError, match=r"new task.title: a lone surrogate"):
        append_task(tmp_path / "auto_tasks.json", {"title": "bad \udcff bytes"})
    assert not (tmp_path / "auto_tasks.json").exists()


def test_the_incremental_reader_parses_only_what_was_appended(tmp_path):
    path = tmp_path / "auto_tasks.json"
    path.write_text(json.dumps([{"id": f"t{i}", "title": f"task {i}"} for i in range(3)], indent=2))
    inbox = Inbox(path)
    first = inbox.read()
    assert [t.id for t in first] == ["t0", "t1", "t2"]
    assert inbox.read() is first  # unchanged file: nothing read again
    with open(path, "a") as f:
        f.write('\n{"title": "appended"}\n')
    parsed = inbox._parsed
    again = inbox.read()
    assert inbox._parsed is parsed  # extended in place, not parsed anew
    assert [t.title for t in again] == ["task 0", "task 1", "task 2", "appended"]
    assert again[3].line == len(path.read_text().splitlines())
    assert again == Inbox(path).read()  # the same as a fresh full read, line numbers included
    path.write_text(path.read_text().replace('"task 1"', '"task one"'))  # an edit in the middle
    assert [t.title for t in inbox.read()][1] == "task one"
    with open(path, "a") as f:
        f.write('{"title": oops}\n')
    with pytest.raises(InboxError, match=r":\d+:11: Expecting value"):
        inbox.read()
