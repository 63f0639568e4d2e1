"""The service's own live state (SQLite, `<home>/.gvpie/state.db`): status, attempts, leases, runs.

Every transition is one SQLite transaction, so concurrent workers agree; a task is claimed
by exactly one worker and a finished task is never run again. A lease is only ever taken
back from a process that is gone: on this host its pid (with its start time, so a recycled
pid does not count) must be dead; on another host its heartbeat must have stopped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from auto_gvpie.inbox import FINISHED, Status, Task, derived_id

log = logging.getLogger(__name__)

LEASE_TIMEOUT_S = 120.0  # a lease from another host is dead after this long without a heartbeat
HEARTBEAT_S = 10.0  # how often a running task renews its lease (well inside the timeout)
CANCEL_POLL_S = 1.0  # how often a running task looks for a cancel request (a cheap read)


@dataclass
class TaskState:
    id: str
    status: str
    attempts: int = 0
    last_error: str | None = None
    stage: str | None = None
    lease_owner: str | None = None
    lease_pid: int | None = None
    lease_host: str | None = None
    lease_start: str | None = None
    heartbeat: float | None = None
    created: float | None = None
    updated: float | None = None
    artifacts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    score: int | None = None  # the judge's score of the result kept (--judge)
    verdict: str | None = None  # the judge's verdict on it, one line
    cancel_requested: float | None = None  # when someone asked a running task to stop (--cancel, the web page)
    claimed_at: float | None = None  # when the latest run of the task began (elapsed time, time per task)


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt, as every store records it (state store here, memory in LanceDB)."""
    task: Task
    attempt: int
    outcome: str  # passed | refused | tests_failed | bad_answer | invalid_program | picture_rejected | judge_rejected | patch_saved
    feedback: str = ""
    answer: str = ""
    test_command: str | None = None  # the failing (else the first) test command
    exit_code: int | None = None
    error_lines: tuple[str, ...] = ()
    llm_seconds: float = 0.0
    test_seconds: float = 0.0
    total_seconds: float = 0.0
    artifact_kind: str | None = None
    artifact_path: str | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, stage TEXT, lease_owner TEXT, lease_pid INTEGER, lease_host TEXT,
    heartbeat REAL, created REAL, updated REAL, artifacts TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS runs (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT,
    llm_seconds REAL, test_seconds REAL, total_seconds REAL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS derived (
    title_key TEXT NOT NULL, n INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (title_key, n));
"""
# Columns added after the first release; a state.db from then gets them on open.
_ADDED_COLUMNS = {"lease_start": "TEXT", "warnings": "TEXT NOT NULL DEFAULT '[]'", "notes": "TEXT NOT NULL DEFAULT '[]'",
                  "score": "INTEGER", "verdict": "TEXT", "cancel_requested": "REAL", "claimed_at": "REAL"}


def process_start(pid: int | None) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), which tells a live lease
    holder from a later process that got the same pid; None where /proc does not say."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or process_start(pid) in (None, start)


_MY_START = process_start(os.getpid())


class StateStore:
    """Live task state, keyed by task id."""

    def __init__(self, state_dir: Path, readonly: bool = False):
        self.state_dir = state_dir
        self.path = state_dir / "state.db"
        self._synced: set[str] = set()
        if readonly:
            self._columns = set()
            if self.path.exists():
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None)
                self._columns = {row[1] for row in self.db.execute("PRAGMA table_info(tasks)")}
                if not self._columns:
                    self.db.close()
            if not self._columns:
                # No store yet, or one a worker has only just created (its tables not written yet):
                # a look at it sees no tasks rather than an error (the dashboard looks at any moment).
                self.db = sqlite3.connect(":memory:", isolation_level=None)
                self._create()
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._create()
        self.db.row_factory = sqlite3.Row

    def _create(self) -> None:
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(tasks)")}
        for name, decl in _ADDED_COLUMNS.items():
            if name not in columns:
                self.db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {decl}")
        self._columns = columns | set(_ADDED_COLUMNS)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- ids and the inbox ------------------------------------------------------------------------

    def resolve(self, tasks: list[Task]) -> list[Task]:
        """The tasks with their final ids, as `sync` would give them; writes nothing."""
        return self._assign(tasks)[0]

    def sync(self, tasks: list[Task]) -> list[Task]:
        """Resolve ids and make sure every task has a state row; the file's status only seeds a new row."""
        with self._tx() as db:
            resolved, new_ids = self._assign(tasks)
            db.executemany("INSERT OR IGNORE INTO derived (title_key, n, id) VALUES (?, ?, ?)", new_ids)
            fresh = [t for t in resolved if t.id not in self._synced]
            now = time.time()
            db.executemany(
                "INSERT OR IGNORE INTO tasks (id, status, created, updated) VALUES (?, ?, ?, ?)",
                [(t.id, Status.PENDING if t.status == Status.IN_PROGRESS else t.status, now, now) for t in fresh])
        self._synced.update(t.id for t in fresh)
        return resolved

    def _assign(self, tasks: list[Task]) -> tuple[list[Task], list[tuple]]:
        """Ids for tasks without one. Per title, the store remembers every id it gave out. The lines
        there are now get those ids, unfinished ones first (so deleting a done line re-runs nothing
        and skips nothing), and a line beyond the ones seen before gets a new number (a repeated
        request runs again). Nothing is ever forgotten, so a file read while an editor rewrites it
        (empty for a moment) cannot make finished tasks look new."""
        groups: dict[str, list[int]] = {}
        for index, task in enumerate(tasks):
            if task.title_key is not None:
                groups.setdefault(task.title_key, []).append(index)
        if not groups:
            return tasks, []
        known: dict[str, list[tuple[int, str, bool]]] = {}
        for key, n, task_id, status in self._derived_rows(
                "SELECT d.title_key, d.n, d.id, t.status FROM derived d LEFT JOIN tasks t ON t.id = d.id"
                " ORDER BY d.title_key, d.n"):
            known.setdefault(key, []).append((n, task_id, status in FINISHED))
        out = list(tasks)
        new_ids = []
        for key, indexes in groups.items():
            rows = known.get(key, [])
            if len(indexes) < len(rows):
                rows = sorted(sorted(rows, key=lambda r: (r[2], r[0]))[: len(indexes)])
            ids = [task_id for _, task_id, _ in rows]
            top = max((n for n, *_ in known.get(key, [])), default=0)
            while len(ids) < len(indexes):
                top += 1
                ids.append(derived_id(key, top))
                new_ids.append((key, top, ids[-1]))
            for index, task_id in zip(indexes, ids):
                if tasks[index].id != task_id:
                    out[index] = replace(tasks[index], id=task_id)
        return out, new_ids

    def _derived_rows(self, query: str) -> list:
        try:
            return self.db.execute(query).fetchall()
        except sqlite3.OperationalError:  # a read-only look at a state.db from before derived ids
            return []

    # -- reading ---------------------------------------------------------------------------------

    def _state(self, row: sqlite3.Row) -> TaskState:
        data = {k: row[k] for k in row.keys()}
        data["artifacts"] = json.loads(data["artifacts"])
        data["warnings"] = json.loads(data.get("warnings") or "[]")
        data["notes"] = json.loads(data.get("notes") or "[]")
        return TaskState(**data)

    def get(self, task_id: str) -> TaskState | None:
        row = self.db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else self._state(row)

    def all(self) -> dict[str, TaskState]:
        return {state.id: state for state in map(self._state, self.db.execute("SELECT * FROM tasks"))}

    def statuses(self, tasks: list[Task]) -> dict[str, str]:
        """Each task's effective status: the store is the truth once a task has been seen; a file
        edit can still cancel (or mark done) a pending task."""
        stored = dict(self.db.execute("SELECT id, status FROM tasks").fetchall())
        out = {}
        for task in tasks:
            status = stored.get(task.id)
            if status is None:
                status = task.status
            elif status == Status.PENDING and task.status in (Status.CANCELLED, Status.DONE):
                status = task.status
            out[task.id] = Status(status)
        return out

    def seconds(self) -> dict[str, float]:
        """Time spent on each task, all its attempts together."""
        return dict(self.db.execute("SELECT task_id, SUM(total_seconds) FROM runs GROUP BY task_id").fetchall())

    def runs(self, task_id: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs WHERE task_id=? ORDER BY created", (task_id,))]

    # -- transitions -----------------------------------------------------------------------------

    def claim(self, task_id: str, owner: str) -> bool:
        """pending -> in_progress with a lease; False when someone else got there first."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tasks SET status='in_progress', lease_owner=?, lease_pid=?, lease_host=?, lease_start=?,"
                " heartbeat=?, updated=?, stage='claimed', warnings='[]', notes='[]', cancel_requested=NULL, claimed_at=?"
                " WHERE id=? AND status='pending'",
                (owner, os.getpid(), socket.gethostname(), _MY_START, now, now, now, task_id))
            return cur.rowcount == 1

    def heartbeat(self, task_id: str, owner: str, stage: str | None = None) -> None:
        now = time.time()
        self.db.execute(
            "UPDATE tasks SET heartbeat=?, updated=?, stage=COALESCE(?, stage) WHERE id=? AND lease_owner=?",
            (now, now, stage, task_id, owner))

    def annotate(self, task_id: str, warnings: list[str], notes: list[str]) -> None:
        """Shown by --status: problems with the task as written (a refused input), and notes on how it
        is approached (the files localisation chose)."""
        self.db.execute("UPDATE tasks SET warnings=?, notes=? WHERE id=?",
                        (json.dumps(warnings), json.dumps(notes), task_id))

    def record_attempt(self, record: AttemptRecord) -> None:
        detail = record.feedback[:2000] or None
        with self._tx() as db:
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (record.task.id, record.attempt, record.outcome, detail, record.llm_seconds,
                        record.test_seconds, record.total_seconds, time.time()))
            db.execute("UPDATE tasks SET attempts=MAX(attempts, ?), last_error=?, updated=? WHERE id=?",
                       (record.attempt, detail if record.outcome != "passed" else None, time.time(), record.task.id))

    def score(self, task_id: str, score: int, verdict: str) -> None:
        """The judge's score of the result a task keeps (shown by --status; the trainer's input)."""
        self.db.execute("UPDATE tasks SET score=?, verdict=? WHERE id=?", (score, verdict, task_id))

    def finish(self, task_id: str, owner: str, status: str, error: str | None, artifacts: list[str]) -> None:
        assert status in FINISHED
        with self._tx() as db:
            db.execute(
                "UPDATE tasks SET status=?, last_error=?, artifacts=?, stage=NULL, lease_owner=NULL, lease_pid=NULL,"
                " lease_host=NULL, lease_start=NULL, updated=? WHERE id=? AND lease_owner=?",
                (status, error, json.dumps(artifacts), time.time(), task_id, owner))

    def mark(self, task_id: str, status: str, error: str | None) -> None:
        """Settle a task that is not running (a dependency failed, the file cancelled it)."""
        with self._tx() as db:
            db.execute("UPDATE tasks SET status=?, last_error=?, updated=? WHERE id=? AND status='pending'",
                       (status, error, time.time(), task_id))

    def request_cancel(self, task_id: str) -> str | None:
        """Cancel a task: a pending one is settled at once; a running one is asked to stop (its
        worker's LeaseKeeper sees the request and the engine stops at the next check). Returns the
        status the task had (None when the store does not know it)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM tasks WHERE id=?", (task_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == Status.PENDING:
                db.execute("UPDATE tasks SET status='cancelled', last_error='cancelled by the user', updated=?"
                           " WHERE id=?", (now, task_id))
            elif row["status"] == Status.IN_PROGRESS:
                db.execute("UPDATE tasks SET cancel_requested=?, updated=? WHERE id=?", (now, now, task_id))
            return row["status"]

    def cancel_requested(self, task_id: str, owner: str) -> bool:
        row = self.db.execute("SELECT cancel_requested FROM tasks WHERE id=? AND lease_owner=?",
                              (task_id, owner)).fetchone()
        return row is not None and row[0] is not None

    def release(self, task_id: str, owner: str, error: str | None = None) -> None:
        """Back to pending, attempts kept (stopped, or the LLM or the repository went away)."""
        with self._tx() as db:
            db.execute(
                "UPDATE tasks SET status='pending', stage=NULL, lease_owner=NULL, lease_pid=NULL, lease_host=NULL,"
                " lease_start=NULL, last_error=COALESCE(?, last_error), updated=?"
                " WHERE id=? AND lease_owner=? AND status='in_progress'",
                (error, time.time(), task_id, owner))

    def recover_stale(self, lease_timeout: float = LEASE_TIMEOUT_S) -> list[str]:
        """Leases whose holder is gone go back to pending: on this host, a dead process; on another
        host, a heartbeat older than `lease_timeout`. A live holder's lease is never taken."""
        host, now = socket.gethostname(), time.time()
        recovered = []
        with self._tx() as db:
            rows = db.execute("SELECT id, lease_pid, lease_host, lease_start, heartbeat, cancel_requested FROM tasks"
                              " WHERE status='in_progress'").fetchall()
            for row in rows:
                if row["lease_host"] == host:
                    dead = not pid_alive(row["lease_pid"], row["lease_start"])
                else:
                    dead = (row["heartbeat"] or 0) < now - lease_timeout
                if dead:
                    # A task the user cancelled while its worker died stays cancelled.
                    status = "cancelled" if row["cancel_requested"] is not None else "pending"
                    db.execute("UPDATE tasks SET status=?, stage=NULL, lease_owner=NULL, lease_pid=NULL,"
                               " lease_host=NULL, lease_start=NULL, updated=? WHERE id=?", (status, now, row["id"]))
                    recovered.append(row["id"])
        if recovered:
            log.warning("recovered %d task(s) from dead leases: %s", len(recovered), ", ".join(recovered))
        return recovered

    def adopt(self, owner_prefix: str) -> list[tuple[str, str]]:
        """Leases whose owner starts with `owner_prefix` become this process's (a restarted queue
        dispatcher takes back the tasks it handed to workers, so `recover_stale` keeps them);
        returns (task id, owner) for each."""
        with self._tx() as db:
            rows = db.execute("SELECT id, lease_owner FROM tasks WHERE status='in_progress'"
                              " AND substr(lease_owner, 1, ?) = ?", (len(owner_prefix), owner_prefix)).fetchall()
            db.executemany("UPDATE tasks SET lease_pid=?, lease_host=?, lease_start=? WHERE id=?",
                           [(os.getpid(), socket.gethostname(), _MY_START, row["id"]) for row in rows])
        return [(row["id"], row["lease_owner"]) for row in rows]

    def seed_attempts(self, task_id: str, attempts: int) -> None:
        """A task's attempts so far, made elsewhere (a queue worker continues where an earlier round stopped)."""
        self.db.execute("UPDATE tasks SET attempts=MAX(attempts, ?) WHERE id=?", (attempts, task_id))

    def live_leases(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT id FROM tasks WHERE status='in_progress'")}


class LeaseKeeper:
    """Renews one task's lease every HEARTBEAT_S while it runs, however long a test or an LLM call
    takes; its own connection, so it never waits on the worker's. It also looks for a cancel
    request every CANCEL_POLL_S and sets `cancelled`, which the engine checks between steps."""

    def __init__(self, state_dir: Path, task_id: str, owner: str, interval: float = HEARTBEAT_S,
                 cancelled: threading.Event | None = None):
        self.args = (state_dir, task_id, owner)
        self.interval = interval
        self.cancelled = cancelled or threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{task_id}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        state_dir, task_id, owner = self.args
        store = StateStore(state_dir)
        next_beat = time.monotonic() + self.interval
        try:
            while not self._stop.wait(min(self.interval, CANCEL_POLL_S)):
                try:
                    if not self.cancelled.is_set() and store.cancel_requested(task_id, owner):
                        log.info("cancel requested for %s", task_id)
                        self.cancelled.set()
                    if time.monotonic() >= next_beat:
                        store.heartbeat(task_id, owner)
                        next_beat = time.monotonic() + self.interval
                except sqlite3.Error as exc:  # a busy database: try again next time
                    log.warning("heartbeat for %s failed: %s", task_id, exc)
        finally:
            store.close()
