"""The task inbox (the user's auto_tasks.json) and the service's own live state (SQLite).

The inbox belongs to the user: it is only ever read, and appended to by `append_task`.
Status, attempts, errors and leases live in `<home>/.gvpie/state.db`, keyed by task id,
so a task is claimed by exactly one worker and a finished task is never run again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

STATUSES = ("pending", "in_progress", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
KINDS = ("code", "pixel")
_FIELDS = {"id", "title", "kind", "description", "inputs", "tests", "status", "priority",
           "depends_on", "max_attempts", "test_timeout"}
_PIXEL_WORDS = re.compile(
    r"\b(pixels?|pixel[- ]program|visual|screen|icon|draw(s|ing)?|render(s|ing)?|image|picture|sprite|"
    r"canvas|logo|banner|paint|sketch|png|colou?rs?|shapes?)\b", re.I)
_CODE_WORDS = re.compile(r"\b(fix|bug|test|function|class|module|refactor|implement|patch|code|\.py|\.rs|\.js)\b", re.I)


class InboxError(Exception):
    """The task file cannot be used; the message names the file, line and column or JSON path."""


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    kind: str
    kind_inferred: bool = False
    description: str = ""
    inputs: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()
    status: str = "pending"  # as written in the file
    priority: int = 5
    depends_on: tuple[str, ...] = ()
    max_attempts: int = 3
    test_timeout: float | None = None
    position: int = 0  # order in the file
    line: int = 0


def infer_kind(title: str, description: str) -> str:
    """Pixel when the words are about pictures and not about code; code otherwise."""
    text = f"{title}\n{description}"
    pixel = len(_PIXEL_WORDS.findall(text))
    code = len(_CODE_WORDS.findall(text))
    return "pixel" if pixel and pixel >= code else "code"


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug[:40].rstrip("-") or "task"


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _skip(text: str, pos: int, commas: bool) -> int:
    while pos < len(text) and (text[pos].isspace() or (commas and text[pos] == ",")):
        pos += 1
    return pos


def _scan(text: str, name: str) -> Iterator[tuple[Any, int, str]]:
    """Yield (value, offset, json-path) for every task object: array elements and appended objects."""
    decoder = json.JSONDecoder()
    pos = _skip(text, 0, commas=False)
    index = 0

    def fail(at: int, what: str) -> InboxError:
        line, col = _line_col(text, at)
        return InboxError(f"{name}:{line}:{col}: {what}")

    def decode(at: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise fail(exc.pos, exc.msg) from None

    while pos < len(text):
        if text[pos] == "[":
            pos = _skip(text, pos + 1, commas=False)
            while True:
                if pos >= len(text):
                    raise fail(pos, "unterminated array: expected ']'")
                if text[pos] == "]":
                    pos += 1
                    break
                value, end = decode(pos)
                yield value, pos, f"[{index}]"
                index += 1
                pos = _skip(text, end, commas=False)
                if pos < len(text) and text[pos] == ",":
                    pos = _skip(text, pos + 1, commas=False)
                elif pos < len(text) and text[pos] != "]":
                    raise fail(pos, "expected ',' or ']' after a task")
        elif text[pos] == "{":
            value, end = decode(pos)
            yield value, pos, f"[{index}]"
            index += 1
            pos = end
        else:
            raise fail(pos, "expected a task object '{' or an array '['")
        pos = _skip(text, pos, commas=True)


def _check_task(raw: Any, where: str, position: int, line: int) -> Task:
    if not isinstance(raw, dict):
        raise InboxError(f"{where}: a task must be a JSON object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise InboxError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(_FIELDS))})")

    def get(key: str, kind: type | tuple, default: Any) -> Any:
        value = raw.get(key, default)
        if value is default:
            return value
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise InboxError(f"{where}.{key}: must be {names.replace('str', 'a string').replace('int', 'an integer')}")
        return value

    def strings(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InboxError(f"{where}.{key}: must be a list of non-empty strings")
        return tuple(value)

    title = get("title", str, None)
    if not title or not title.strip():
        raise InboxError(f"{where}.title: required (a non-empty string)")
    description = get("description", str, "")
    kind = get("kind", str, None)
    if kind is not None and kind not in KINDS:
        raise InboxError(f"{where}.kind: must be one of {', '.join(KINDS)}")
    status = get("status", str, "pending")
    if status not in STATUSES:
        raise InboxError(f"{where}.status: must be one of {', '.join(STATUSES)}")
    max_attempts = get("max_attempts", int, 3)
    if not 1 <= max_attempts <= 100:
        raise InboxError(f"{where}.max_attempts: must be between 1 and 100")
    test_timeout = get("test_timeout", (int, float), None)
    if test_timeout is not None and test_timeout <= 0:
        raise InboxError(f"{where}.test_timeout: must be > 0")
    task_id = get("id", str, None)
    if task_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", task_id):
        raise InboxError(f"{where}.id: use letters, digits, '.', '_' and '-' (at most 100)")
    if task_id is None:
        canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False)
        task_id = f"{_slug(title)}-{hashlib.sha1(canonical.encode()).hexdigest()[:8]}"
    return Task(
        id=task_id, title=title.strip(), kind=kind or infer_kind(title, description), kind_inferred=kind is None,
        description=description, inputs=strings("inputs"), tests=strings("tests"), status=status,
        priority=get("priority", int, 5), depends_on=strings("depends_on"), max_attempts=max_attempts,
        test_timeout=test_timeout, position=position, line=line)


def parse_inbox(text: str, name: str = "auto_tasks.json") -> list[Task]:
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for position, (raw, offset, path) in enumerate(_scan(text, name)):
        line, col = _line_col(text, offset)
        task = _check_task(raw, f"{name}:{line}:{col}: {path}", position, line)
        if task.id in seen:
            if "id" in raw:
                raise InboxError(f"{name}:{line}:{col}: {path}.id: duplicate id {task.id!r} (first at line {seen[task.id]})")
            # Two identical tasks without ids are two requests: number the repeat.
            n = 2
            while f"{task.id}-{n}" in seen:
                n += 1
            task = Task(**{**task.__dict__, "id": f"{task.id}-{n}"})
        seen[task.id] = line
        tasks.append(task)
    return tasks


def read_inbox(path: Path, retries: int = 5) -> list[Task]:
    """Read the inbox; a value cut off at the end of the file may be a raw `>>` append still being written, so retry."""
    if not path.exists():
        return []
    for attempt in range(retries):
        with open(path, "rb") as handle:
            # A shared lock on the file itself, so a concurrent --add is never read half-written.
            fcntl.flock(handle, fcntl.LOCK_SH)
            data = handle.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line, col = _line_col(data[: exc.start].decode("utf-8", "replace"), exc.start)
            raise InboxError(f"{path}:{line}:{col}: not UTF-8 text") from None
        try:
            return parse_inbox(text, str(path))
        except InboxError:
            truncated = text.rstrip() and text.rstrip()[-1] not in "]}"
            if not truncated or attempt == retries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return []


def append_task(path: Path, fields: dict[str, Any]) -> Task:
    """Append one task as a JSON line, under an exclusive lock and in one write, never rewriting what is there.

    A file that does not parse is refused rather than appended to, so the error is seen now."""
    _check_task(fields, f"{path}: new task", 0, 0)
    line = json.dumps(fields, ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        existing = os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")
        before = parse_inbox(existing, str(path))
        if "id" in fields and any(t.id == fields["id"] for t in before):
            raise InboxError(f"{path}: a task with id {fields['id']!r} already exists")
        addition = ("\n" if existing and not existing.endswith("\n") else "") + line + "\n"
        # Ids of tasks without one depend on repeats earlier in the file; parse the result to learn it.
        task = parse_inbox(existing + addition, str(path))[-1]
        os.write(fd, addition.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    return task


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
    heartbeat: float | None = None
    created: float | None = None
    updated: float | None = None
    artifacts: list[str] = field(default_factory=list)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, stage TEXT, lease_owner TEXT, lease_pid INTEGER, lease_host TEXT,
    heartbeat REAL, created REAL, updated REAL, artifacts TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS runs (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT,
    llm_seconds REAL, test_seconds REAL, total_seconds REAL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StateStore:
    """Live task state; every transition is one SQLite transaction, so concurrent workers agree."""

    def __init__(self, state_dir: Path, readonly: bool = False):
        self.path = state_dir / "state.db"
        if readonly:
            if not self.path.exists():
                self.db = sqlite3.connect(":memory:")
                self.db.executescript(_SCHEMA)
            else:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        self.db.row_factory = sqlite3.Row

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

    def sync(self, tasks: list[Task]) -> None:
        """Make sure every inbox task has a state row; the file's status only seeds a new row."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO tasks (id, status, created, updated) VALUES (?, ?, ?, ?)",
                [(t.id, "pending" if t.status == "in_progress" else t.status, now, now) for t in tasks])

    def get(self, task_id: str) -> TaskState | None:
        row = self.db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        data = dict(row)
        data["artifacts"] = json.loads(data["artifacts"])
        return TaskState(**data)

    def all(self) -> dict[str, TaskState]:
        states = {}
        for row in self.db.execute("SELECT * FROM tasks"):
            data = dict(row)
            data["artifacts"] = json.loads(data["artifacts"])
            states[data["id"]] = TaskState(**data)
        return states

    def claim(self, task_id: str, owner: str) -> bool:
        """pending -> in_progress with a lease; False when someone else got there first."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tasks SET status='in_progress', lease_owner=?, lease_pid=?, lease_host=?, heartbeat=?,"
                " updated=?, stage='claimed' WHERE id=? AND status='pending'",
                (owner, os.getpid(), socket.gethostname(), now, now, task_id))
            return cur.rowcount == 1

    def heartbeat(self, task_id: str, owner: str, stage: str | None = None) -> None:
        now = time.time()
        self.db.execute(
            "UPDATE tasks SET heartbeat=?, updated=?, stage=COALESCE(?, stage) WHERE id=? AND lease_owner=?",
            (now, now, stage, task_id, owner))

    def record_attempt(self, task_id: str, attempt: int, outcome: str, detail: str | None,
                       llm_seconds: float = 0.0, test_seconds: float = 0.0, total_seconds: float = 0.0) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (task_id, attempt, outcome, detail, llm_seconds, test_seconds, total_seconds, time.time()))
            db.execute("UPDATE tasks SET attempts=MAX(attempts, ?), last_error=?, updated=? WHERE id=?",
                       (attempt, detail if outcome != "passed" else None, time.time(), task_id))

    def finish(self, task_id: str, owner: str, status: str, error: str | None, artifacts: list[str]) -> None:
        assert status in FINISHED
        with self._tx() as db:
            db.execute(
                "UPDATE tasks SET status=?, last_error=?, artifacts=?, stage=NULL, lease_owner=NULL, lease_pid=NULL,"
                " lease_host=NULL, updated=? WHERE id=? AND lease_owner=?",
                (status, error, json.dumps(artifacts), time.time(), task_id, owner))

    def mark(self, task_id: str, status: str, error: str | None) -> None:
        """Settle a task that is not running (a dependency failed, the file cancelled it)."""
        with self._tx() as db:
            db.execute("UPDATE tasks SET status=?, last_error=?, updated=? WHERE id=? AND status='pending'",
                       (status, error, time.time(), task_id))

    def release(self, task_id: str, owner: str, error: str | None = None) -> None:
        """Back to pending, attempts kept (stopped, or the LLM went away)."""
        with self._tx() as db:
            db.execute(
                "UPDATE tasks SET status='pending', stage=NULL, lease_owner=NULL, lease_pid=NULL, lease_host=NULL,"
                " last_error=COALESCE(?, last_error), updated=? WHERE id=? AND lease_owner=? AND status='in_progress'",
                (error, time.time(), task_id, owner))

    def recover_stale(self, lease_timeout: float = 120.0) -> list[str]:
        """Leases whose process is gone (same host) or whose heartbeat stopped go back to pending."""
        host, now = socket.gethostname(), time.time()
        recovered = []
        with self._tx() as db:
            for row in db.execute("SELECT id, lease_pid, lease_host, heartbeat FROM tasks WHERE status='in_progress'").fetchall():
                dead = (row["lease_host"] == host and not pid_alive(row["lease_pid"])) or \
                    (row["heartbeat"] or 0) < now - lease_timeout
                if dead:
                    db.execute("UPDATE tasks SET status='pending', stage=NULL, lease_owner=NULL, lease_pid=NULL,"
                               " lease_host=NULL, updated=? WHERE id=?", (now, row["id"]))
                    recovered.append(row["id"])
        if recovered:
            log.warning("recovered %d task(s) from dead leases: %s", len(recovered), ", ".join(recovered))
        return recovered

    def runs(self, task_id: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs WHERE task_id=? ORDER BY created", (task_id,))]

    def set_meta(self, key: str, value: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None


def effective_status(task: Task, state: TaskState | None) -> str:
    """The store is the truth once a task has been seen; a file edit can still cancel a pending task."""
    if state is None:
        return task.status
    if state.status == "pending" and task.status in ("cancelled", "done"):
        return task.status
    return state.status


def runnable(tasks: list[Task], states: dict[str, TaskState]) -> tuple[list[Task], dict[str, str]]:
    """Pending tasks whose dependencies are done, by priority (higher first) then file order;
    plus, for tasks that cannot run, why (waiting, or blocked by a failed dependency)."""
    status = {t.id: effective_status(t, states.get(t.id)) for t in tasks}
    ready, why = [], {}
    for task in tasks:
        if status[task.id] != "pending":
            continue
        missing = [d for d in task.depends_on if status.get(d) != "done"]
        broken = [d for d in missing if status.get(d) in ("failed", "cancelled")]
        if broken:
            why[task.id] = f"dependency {broken[0]} {status[broken[0]]}"
        elif missing:
            unknown = [d for d in missing if d not in status]
            why[task.id] = f"waiting for {', '.join(missing)}" + (" (unknown id)" if unknown else "")
        else:
            ready.append(task)
    ready.sort(key=lambda t: (-t.priority, t.position))
    return ready, why
