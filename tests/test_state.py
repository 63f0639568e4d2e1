"""The state store: claims, leases, ids for tasks without one; state is exact under concurrency."""

from __future__ import annotations

import json
import subprocess
import time

from auto_gvpie.inbox import parse_inbox, runnable
from auto_gvpie.state import AttemptRecord, LeaseKeeper, StateStore


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
    ready, why = runnable(tasks, store.statuses(tasks))
    assert [t.id for t in ready] == ["high", "a", "b", "low"]
    assert why == {"needs-a": "waiting for a"}
    assert store.claim("a", "w1")
    store.finish("a", "w1", "done", None, [])
    ready, why = runnable(tasks, store.statuses(tasks))
    assert ready[0].id == "needs-a" and not why


def test_failed_dependency_blocks(tmp_path):
    tasks = parse_inbox('[{"id": "a", "title": "a"}, {"id": "b", "title": "b", "depends_on": ["a"]}]')
    store = StateStore(tmp_path)
    store.sync(tasks)
    store.claim("a", "w")
    store.finish("a", "w", "failed", "boom", [])
    _, why = runnable(tasks, store.statuses(tasks))
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
    tasks = store.sync(parse_inbox('{"id": "t", "title": "t"}'))
    assert store.claim("t", "w1")
    store.record_attempt(AttemptRecord(tasks[0], 1, "tests_failed", "boom"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.db.execute("UPDATE tasks SET lease_pid=? WHERE id='t'", (dead.pid,))
    assert store.recover_stale() == ["t"]
    state = store.get("t")
    assert (state.status, state.attempts, state.lease_owner) == ("pending", 1, None)


def test_readonly_store_on_a_fresh_home_creates_nothing(tmp_path):
    store = StateStore(tmp_path / ".gvpie", readonly=True)
    assert store.all() == {}
    assert not (tmp_path / ".gvpie").exists()


def test_a_live_holders_lease_is_never_taken_however_old_its_heartbeat(tmp_path):
    store = StateStore(tmp_path)
    store.sync(parse_inbox('{"id": "t", "title": "t"}'))
    assert store.claim("t", "w1")  # held by this (live) process
    store.db.execute("UPDATE tasks SET heartbeat=0 WHERE id='t'")  # silent for decades
    assert store.recover_stale(lease_timeout=1) == []
    assert store.get("t").status == "in_progress"


def test_a_recycled_pid_does_not_keep_a_dead_lease(tmp_path):
    store = StateStore(tmp_path)
    store.sync(parse_inbox('{"id": "t", "title": "t"}'))
    assert store.claim("t", "w1")
    # Our pid, but another start time: the process that held the lease is gone, the pid reused.
    store.db.execute("UPDATE tasks SET lease_start='1' WHERE id='t'")
    assert store.recover_stale() == ["t"]


def test_another_hosts_lease_is_taken_only_when_its_heartbeat_stopped(tmp_path):
    store = StateStore(tmp_path)
    store.sync(parse_inbox('{"id": "t", "title": "t"}'))
    assert store.claim("t", "w1")
    store.db.execute("UPDATE tasks SET lease_host='elsewhere', lease_pid=1, heartbeat=? WHERE id='t'", (time.time(),))
    assert store.recover_stale(lease_timeout=60) == []
    store.db.execute("UPDATE tasks SET heartbeat=? WHERE id='t'", (time.time() - 61,))
    assert store.recover_stale(lease_timeout=60) == ["t"]


def test_the_lease_keeper_renews_the_heartbeat_while_the_task_runs(tmp_path):
    store = StateStore(tmp_path)
    store.sync(parse_inbox('{"id": "t", "title": "t"}'))
    assert store.claim("t", "w1")
    store.db.execute("UPDATE tasks SET heartbeat=0 WHERE id='t'")
    with LeaseKeeper(tmp_path, "t", "w1", interval=0.05):
        time.sleep(0.3)  # a long test command or LLM call: nobody calls heartbeat() by hand
    assert store.get("t").heartbeat > time.time() - 5


def ids(store: StateStore, text: str, finish: tuple[str, ...] = ()) -> list[str]:
    tasks = store.sync(parse_inbox(text))
    for task_id in finish:
        assert store.claim(task_id, "w")
        store.finish(task_id, "w", "done", None, [])
    return [t.id for t in tasks]


def test_a_repeated_line_is_a_second_request_and_deleting_a_done_one_skips_nothing(tmp_path):
    store = StateStore(tmp_path)
    line = '{"title": "Draw a cat"}\n'
    (first,) = ids(store, line)
    ids(store, line, finish=(first,))
    one, two = ids(store, line + line)  # appended again: a second run is expected
    assert one == first and two != first
    assert store.statuses(store.resolve(parse_inbox(line + line))) == {one: "done", two: "pending"}
    (left,) = ids(store, line)  # the user deletes the first (done) line
    assert left == two and store.statuses(store.resolve(parse_inbox(line)))[left] == "pending"


def test_a_file_read_empty_for_a_moment_makes_nothing_new(tmp_path):
    store = StateStore(tmp_path)
    text = '{"title": "Draw a cat"}\n{"title": "Draw a cat"}\n{"title": "Fix the parser"}\n'
    before = ids(store, text)
    ids(store, text, finish=tuple(before))
    assert ids(store, "") == []  # an editor truncated the file and has not written it yet
    assert ids(store, text) == before
    assert set(store.statuses(store.resolve(parse_inbox(text))).values()) == {"done"}


def test_editing_a_done_task_without_an_id_keeps_it_done(tmp_path):
    store = StateStore(tmp_path)
    (task_id,) = ids(store, '{"title": "Fix the parser", "description": "it crashes"}')
    ids(store, '{"title": "Fix the parser", "description": "it crashes"}', finish=(task_id,))
    edited = '{"title": "Fix the parser", "description": "it crashes on empty input", "priority": 9}'
    assert ids(store, edited) == [task_id]
    assert store.statuses(store.resolve(parse_inbox(edited))) == {task_id: "done"}
