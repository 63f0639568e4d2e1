"""The task inbox: the user's auto_tasks.json, read (incrementally), appended to, put in order.

The file belongs to the user: it is only ever read, and appended to by `append_task`.
Live state (status, attempts, leases) lives in the state store (`state.py`).

Ids. A task with an `id` is known by it. A task without one is known by its title:
`<slug>-<hash of the title>`, so editing its description, tests or priority keeps it the
same task (a done task stays done). Lines with the same title are separate requests; the
state store remembers which ids it has seen for a title, so a repeat gets a new id and
deleting one of them neither re-runs nor skips the others (`StateStore.resolve`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator, Mapping

from auto_gvpie import jsontext

log = logging.getLogger(__name__)


class Status(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)
KINDS = ("code", "pixel")
_FIELDS = {"id", "title", "kind", "description", "inputs", "tests", "status", "priority",
           "depends_on", "max_attempts", "test_timeout", "source", "tags"}
# Word sets rather than one big regex: a 2 KB description is checked in microseconds.
_PIXEL_WORDS = frozenset(
    "pixel pixels visual screen icon draw draws drawing render renders rendering image picture sprite canvas logo "
    "banner paint sketch png color colors colour colours shape shapes".split())
_CODE_WORDS = frozenset("fix bug test function class module refactor implement patch code".split())
_CODE_FILE = re.compile(r"\w\.(?:py|rs|js)\b")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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
    status: str = Status.PENDING  # as written in the file
    priority: int = 5
    depends_on: tuple[str, ...] = ()
    max_attempts: int = 3
    test_timeout: float | None = None
    position: int = 0  # order in the file
    line: int = 0
    title_key: str | None = None  # set when the id is derived from the title (no "id" in the file)
    source: str = "user"  # who queued it: "user", or "architect" for a proposal
    tags: tuple[str, ...] = ()  # skill tags as written; the trainer infers them when there are none


def infer_kind(title: str, description: str) -> str:
    """Pixel when the words are about pictures and not about code; code otherwise."""
    text = f"{title}\n{description}".lower()
    counts = Counter(re.findall(r"\w+", text))
    pixel = sum(counts[w] for w in _PIXEL_WORDS)
    code = sum(counts[w] for w in _CODE_WORDS) + len(_CODE_FILE.findall(text))
    return "pixel" if pixel and pixel >= code else "code"


def derived_id(title_key: str, occurrence: int) -> str:
    """The id of the `occurrence`-th request (1-based) with this title key."""
    return title_key if occurrence == 1 else f"{title_key}-{occurrence}"


def _title_key(title: str) -> str:
    title = title.strip()
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].rstrip("-") or "task"
    return f"{slug}-{hashlib.sha1(title.encode()).hexdigest()[:8]}"


# -- parsing -------------------------------------------------------------------------------------


class _Scanner:
    """Walks the top level of an inbox text (array elements and appended objects), keeping line
    numbers as it goes (linear), and can resume where it stopped when the file only grew."""

    def __init__(self, name: str):
        self.name = name
        self.pos = 0  # offset after the last complete top-level value
        self.index = 0  # tasks seen so far
        self.line = 1  # line number at `self._counted`
        self._counted = 0

    def line_col(self, text: str, at: int) -> tuple[int, int]:
        if at < self._counted:  # an error behind the last counted point: count from the start
            return jsontext.line_col(text, at)
        self.line += text.count("\n", self._counted, at)
        self._counted = at
        return self.line, at - (text.rfind("\n", 0, at) + 1) + 1

    def fail(self, text: str, at: int, what: str) -> InboxError:
        line, col = self.line_col(text, at)
        return InboxError(f"{self.name}:{line}:{col}: {what}")

    def _decode(self, text: str, at: int) -> tuple[Any, int]:
        try:
            return jsontext.decode_at(text, at)
        except jsontext.JSONTextError as exc:
            if exc.offset is None:
                line, col = self.line_col(text, at)
                raise InboxError(f"{self.name}:{line}:{col}: [{self.index}].{exc.path}: {exc.message}") from None
            raise self.fail(text, exc.offset, exc.message) from None

    def scan(self, text: str) -> Iterator[tuple[Any, int, int]]:
        """Yield (value, line, column) for every task object from `self.pos` on."""
        pos = _skip(text, self.pos, commas=True)
        while pos < len(text):
            if text[pos] == "[":
                pos = _skip(text, pos + 1, commas=False)
                while True:
                    if pos >= len(text):
                        raise self.fail(text, pos, "unterminated array: expected ']'")
                    if text[pos] == "]":
                        pos += 1
                        break
                    yield self._value(text, pos)
                    pos = _skip(text, self._end, commas=False)
                    if pos < len(text) and text[pos] == ",":
                        pos = _skip(text, pos + 1, commas=False)
                    elif pos < len(text) and text[pos] != "]":
                        raise self.fail(text, pos, "expected ',' or ']' after a task")
            elif text[pos] == "{":
                yield self._value(text, pos)
                pos = self._end
            else:
                raise self.fail(text, pos, "expected a task object '{' or an array '['")
            self.pos = pos
            pos = _skip(text, pos, commas=True)
        self.pos = len(text)

    def _value(self, text: str, pos: int) -> tuple[Any, int, int]:
        value, self._end = self._decode(text, pos)
        line, col = self.line_col(text, pos)
        self.index += 1
        return value, line, col


def _skip(text: str, pos: int, commas: bool) -> int:
    while pos < len(text) and (text[pos].isspace() or (commas and text[pos] == ",")):
        pos += 1
    return pos


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

    bad = jsontext.surrogate_path(raw)
    if bad is not None:  # from --add, whose arguments can hold undecodable bytes
        raise InboxError(f"{where}.{bad}: a lone surrogate (\\ud800-\\udfff) is not text")
    title = get("title", str, None)
    if not title or not title.strip():
        raise InboxError(f"{where}.title: required (a non-empty string)")
    description = get("description", str, "")
    kind = get("kind", str, None)
    if kind is not None and kind not in KINDS:
        raise InboxError(f"{where}.kind: must be one of {', '.join(KINDS)}")
    status = get("status", str, Status.PENDING)
    if status not in tuple(Status):
        raise InboxError(f"{where}.status: must be one of {', '.join(Status)}")
    max_attempts = get("max_attempts", int, 3)
    if not 1 <= max_attempts <= 100:
        raise InboxError(f"{where}.max_attempts: must be between 1 and 100")
    priority = get("priority", int, 5)
    if abs(priority) > 1_000_000:
        raise InboxError(f"{where}.priority: must be between -1000000 and 1000000")
    test_timeout = get("test_timeout", (int, float), None)
    if test_timeout is not None and not 0 < test_timeout <= 86_400:
        raise InboxError(f"{where}.test_timeout: must be > 0 and at most 86400 seconds")
    task_id = get("id", str, None)
    if task_id is not None and not _ID.fullmatch(task_id):
        raise InboxError(f"{where}.id: use letters, digits, '.', '_' and '-' (at most 100)")
    source = get("source", str, "user")
    if not source.strip() or len(source) > 100:
        raise InboxError(f"{where}.source: must be a non-empty string (\"user\", \"architect\")")
    key = None if task_id is not None else _title_key(title)
    return Task(
        id=task_id or key, title=title.strip(), kind=kind or infer_kind(title, description),
        kind_inferred=kind is None, description=description, inputs=strings("inputs"), tests=strings("tests"),
        status=Status(status), priority=priority, depends_on=strings("depends_on"),
        max_attempts=max_attempts, test_timeout=test_timeout, position=position, line=line, title_key=key,
        source=source.strip(), tags=strings("tags"))


def _number_repeats(tasks: list[Task], name: str) -> list[Task]:
    """Explicit ids must be unique; derived ones are numbered by occurrence (the file alone says no
    more; the state store refines this with what it has seen)."""
    seen: dict[str, int] = {}
    occurrences: dict[str, int] = {}
    out = []
    for task in tasks:
        if task.title_key is not None:
            n = occurrences[task.title_key] = occurrences.get(task.title_key, 0) + 1
            if n > 1:
                task = replace(task, id=derived_id(task.title_key, n))
        elif task.id in seen:
            raise InboxError(f"{name}:{task.line}: [{task.position}].id: duplicate id {task.id!r} "
                             f"(first at line {seen[task.id]})")
        seen.setdefault(task.id, task.line)
        out.append(task)
    return out


def parse_inbox(text: str, name: str = "auto_tasks.json") -> list[Task]:
    return _Parsed(name).extend(text.removeprefix("\ufeff")).tasks


class _Parsed:
    """The tasks of one text, extendable by what was appended to it."""

    def __init__(self, name: str):
        self.name = name
        self.scanner = _Scanner(name)
        self.raw_tasks: list[Task] = []
        self.tasks: list[Task] = []

    def extend(self, text: str) -> "_Parsed":
        for raw, line, col in self.scanner.scan(text):
            position = len(self.raw_tasks)
            self.raw_tasks.append(_check_task(raw, f"{self.name}:{line}:{col}: [{position}]", position, line))
        self.tasks = _number_repeats(self.raw_tasks, self.name)
        return self


# -- reading and appending -----------------------------------------------------------------------


def _read_locked(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            # A shared lock on the file itself, so a concurrent --add is never read half-written.
            fcntl.flock(handle, fcntl.LOCK_SH)
            return handle.read()
    except IsADirectoryError:
        raise InboxError(f"{path}: is a directory, not a task file (pass --tasks FILE)") from None
    except PermissionError:
        raise InboxError(f"{path}: permission denied") from None


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # a BOM (Windows editors) is fine
    except UnicodeDecodeError as exc:
        line, col = jsontext.line_col(data[: exc.start].decode("utf-8", "replace"), exc.start)
        raise InboxError(f"{path}:{line}:{col}: not UTF-8 text") from None


class Inbox:
    """The task file, read incrementally: when the file only grew (appends), only the new
    bytes are parsed, so a pick costs the same with 10 or 10,000 tasks."""

    def __init__(self, path: Path):
        self.path = path
        self._data = b""
        self._stat: tuple | None = None
        self._parsed: _Parsed | None = None

    def read(self, retries: int = 5) -> list[Task]:
        """The tasks; a value cut off at the end may be a raw `>>` append still being written, so retry."""
        for attempt in range(retries):
            try:
                return self._read()
            except InboxError:
                self._parsed = self._stat = None
                text = _decode(self._data, self.path).rstrip() if self._data else ""
                truncated = text and text[-1] not in "]}"
                if not truncated or attempt == retries - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return []

    def _read(self) -> list[Task]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._data, self._stat, self._parsed = b"", None, None
            return []
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stat and self._parsed is not None:
            return self._parsed.tasks
        data = _read_locked(self.path)
        grew = (self._parsed is not None and len(data) >= len(self._data)
                and data[: len(self._data)] == self._data)
        if not grew:
            self._parsed = _Parsed(str(self.path))
        text = _decode(data, self.path)
        self._data = data
        self._parsed.extend(text)
        self._stat = stamp
        return self._parsed.tasks


def read_inbox(path: Path) -> list[Task]:
    """One full read (for commands that read once: --status, --dry-run, view_pixels)."""
    return Inbox(path).read()


def append_task(path: Path, fields: dict[str, Any]) -> Task:
    """Append one task as a JSON line, under an exclusive lock and in one write, never rewriting what is there.

    A file that does not parse is refused rather than appended to, so the error is seen now.
    The returned task's id is the file's view; `StateStore.resolve` gives the final one."""
    _check_task(fields, f"{path}: new task", 0, 0)
    line = json.dumps(fields, ensure_ascii=False)
    if path.is_dir():
        raise InboxError(f"{path}: is a directory, not a task file (pass --tasks FILE)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        existing = _decode(os.pread(fd, os.fstat(fd).st_size, 0), path)
        before = parse_inbox(existing, str(path))
        if "id" in fields and any(t.id == fields["id"] for t in before):
            raise InboxError(f"{path}: a task with id {fields['id']!r} already exists")
        addition = ("\n" if existing and not existing.endswith("\n") else "") + line + "\n"
        task = parse_inbox(existing + addition, str(path))[-1]
        os.write(fd, addition.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    return task


# -- ordering ------------------------------------------------------------------------------------


def runnable(tasks: list[Task], status: Mapping[str, str]) -> tuple[list[Task], dict[str, str]]:
    """Pending tasks whose dependencies are done, by priority (higher first) then file order;
    plus, for tasks that cannot run, why (waiting, or blocked by a failed dependency).
    `status`: each task's effective status (`StateStore.statuses`)."""
    ready, why = [], {}
    for task in tasks:
        if status[task.id] != Status.PENDING:
            continue
        missing = [d for d in task.depends_on if status.get(d) != Status.DONE]
        broken = [d for d in missing if status.get(d) in (Status.FAILED, Status.CANCELLED)]
        if broken:
            why[task.id] = f"dependency {broken[0]} {status[broken[0]]}"
        elif missing:
            unknown = [d for d in missing if d not in status]
            why[task.id] = f"waiting for {', '.join(missing)}" + (" (unknown id)" if unknown else "")
        else:
            ready.append(task)
    ready.sort(key=lambda t: (-t.priority, t.position))
    return ready, why
