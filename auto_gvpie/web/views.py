"""What the dashboard and the morning report show, read from the home without changing it.

Every view is plain data (dataclasses and dicts) built from the state store (opened
read-only), the attempt files and artifacts under `artifacts/`, the daemon's lock record and,
for search, LanceDB memory. The web pages and the static report render the same views.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from auto_gvpie.config import Settings
from auto_gvpie.inbox import InboxError, Status, Task, read_inbox
from auto_gvpie.state import StateStore, TaskState

log = logging.getLogger(__name__)

# An artifact is named after its task: `<id>.<ext>` or `<id>.attempt-N.json`. Nothing else is served.
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
GALLERY_SIDE = 256  # pixels a gallery image is scaled up to (nearest neighbour), at most


@dataclass
class QueueRow:
    id: str
    title: str
    kind: str
    status: str
    attempts: int
    max_attempts: int
    priority: int
    stage: str | None
    error: str | None
    elapsed_s: float | None  # running: since it was claimed; finished: how long its last run took
    heartbeat_age_s: float | None
    cancel_requested: bool = False
    updated: float | None = None

    @property
    def tokens(self) -> int | None:
        """Tokens of the answer streaming in now, from the stage text the engine stores."""
        match = re.search(r"LLM answering \((\d+) tokens\)", self.stage or "")
        return int(match.group(1)) if match else None

    def as_json(self) -> dict:
        return {"id": self.id, "title": self.title, "kind": self.kind, "status": self.status,
                "attempts": self.attempts, "max_attempts": self.max_attempts, "stage": self.stage,
                "error": self.error, "elapsed_s": self.elapsed_s, "tokens": self.tokens,
                "cancel_requested": self.cancel_requested}


@dataclass
class TestRun:
    command: str
    exit_code: int | None
    duration_s: float
    timed_out: bool
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


@dataclass
class AttemptView:
    number: int
    outcome: str
    answer: str
    feedback: str
    diff: str
    tests: list[TestRun]  # failing first
    llm_seconds: float | None
    test_seconds: float | None
    total_seconds: float | None
    warnings: list[str]
    localisation: dict | None
    judge: dict | None
    prompt_tokens: int | None

    @property
    def refused(self) -> bool:
        return self.outcome in ("refused", "bad_answer", "invalid_program")


@dataclass
class ArtifactLink:
    name: str
    kind: str  # patch | image | program | file
    size: int


@dataclass
class TaskView:
    row: QueueRow
    task: Task | None
    attempts: list[AttemptView]
    artifacts: list[ArtifactLink]
    patch: str | None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class GalleryItem:
    id: str
    name: str
    title: str
    width: int | None
    height: int | None
    ops: int | None
    date: str
    png: str | None  # the artifact's file name, when the PNG exists
    program: str
    error: str | None


@dataclass
class DaemonHealth:
    running: bool
    pid: int | None = None
    host: str | None = None
    started_at: float | None = None
    uptime_s: float | None = None
    workers: int | None = None
    interval: float | None = None
    heartbeat_age_s: float | None = None  # the freshest heartbeat of the tasks it runs
    current: list[QueueRow] = field(default_factory=list)
    note: str = ""


class Home:
    """Read-only views over one home. Cheap to make: each call opens what it reads and closes it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.artifacts_dir = settings.artifacts_dir

    # -- the queue ---------------------------------------------------------------------------

    def _tasks_and_states(self) -> tuple[list[Task], dict[str, TaskState], dict[str, Status]]:
        store = StateStore(self.settings.state_dir, readonly=True)
        try:
            try:
                tasks = store.resolve(read_inbox(self.settings.tasks_file))
            except InboxError as exc:  # a file mid-edit: show what the store knows
                log.warning("cannot read the task file: %s", exc)
                tasks = []
            states = store.all()
            status = store.statuses(tasks)
        finally:
            store.close()
        return tasks, states, status

    def queue(self) -> list[QueueRow]:
        """Every task: running first, then pending (by priority), then finished (newest first)."""
        tasks, states, status = self._tasks_and_states()
        now = time.time()
        rows = [_row(task, states.get(task.id), status[task.id], now) for task in tasks]
        known = {task.id for task in tasks}
        for state in states.values():  # a task whose line was removed from the file is still history
            if state.id not in known:
                rows.append(_row(None, state, Status(state.status), now))
        order = {Status.IN_PROGRESS: 0, Status.PENDING: 1}
        rows.sort(key=lambda r: (order.get(r.status, 2), -r.priority if r.status == Status.PENDING else 0,
                                 -(r.updated or 0)))
        return rows

    def counts(self, rows: list[QueueRow] | None = None) -> dict[str, int]:
        counts = {s.value: 0 for s in Status}
        for row in rows if rows is not None else self.queue():
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    # -- one task ----------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskView | None:
        if not ARTIFACT_NAME.match(task_id):
            return None
        tasks, states, status = self._tasks_and_states()
        task = next((t for t in tasks if t.id == task_id), None)
        state = states.get(task_id)
        if task is None and state is None:
            return None
        row = _row(task, state, status.get(task_id, Status(state.status) if state else Status.PENDING), time.time())
        attempts = [_attempt(path) for path in self._attempt_files(task_id)]
        attempts = [a for a in attempts if a is not None]
        artifacts = []
        for path in sorted(self.artifacts_dir.glob(f"{task_id}.*")) if self.artifacts_dir.is_dir() else []:
            rest = path.name[len(task_id):]
            if ".attempt-" in rest or not path.is_file() or rest.count(".") != 1 and rest != ".gpu.png":
                continue
            kind = {".patch": "patch", ".png": "image", ".json": "program"}.get(path.suffix, "file")
            artifacts.append(ArtifactLink(path.name, kind, path.stat().st_size))
        patch_path = self.artifacts_dir / f"{task_id}.patch"
        patch = patch_path.read_text(encoding="utf-8", errors="replace") if patch_path.is_file() else None
        return TaskView(row, task, attempts, artifacts, patch, state.notes if state else [],
                        state.warnings if state else [])

    def _attempt_files(self, task_id: str) -> list[Path]:
        if not self.artifacts_dir.is_dir():
            return []
        found = []
        for path in self.artifacts_dir.glob(f"{task_id}.attempt-*.json"):
            number = path.name[len(task_id) + len(".attempt-"):-len(".json")]
            if number.isdigit():
                found.append((int(number), path))
        return [path for _, path in sorted(found)]

    # -- artifacts ---------------------------------------------------------------------------

    def artifact(self, name: str) -> Path | None:
        """The file `artifacts/<name>`, or None: a name that is not an artifact's (a path, a dot
        file, a link pointing out of the folder) is never resolved to anything."""
        if not ARTIFACT_NAME.match(name):
            return None
        folder = self.artifacts_dir.resolve()
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_file():
            return None
        return path

    def scaled_png(self, name: str, side: int = GALLERY_SIDE) -> bytes | None:
        """A pixel image scaled up by a whole factor (nearest neighbour, so pixels stay sharp)."""
        from PIL import Image

        path = self.artifact(name)
        if path is None or path.suffix != ".png":
            return None
        try:
            with Image.open(path) as image:
                image.load()
                factor = max(1, side // max(image.width, image.height))
                scaled = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            return None
        out = io.BytesIO()
        scaled.save(out, format="PNG")
        return out.getvalue()

    def data_uri(self, name: str) -> str | None:
        """The scaled image inlined, for the static report."""
        data = self.scaled_png(name)
        return None if data is None else "data:image/png;base64," + base64.b64encode(data).decode()

    def gallery(self) -> list[GalleryItem]:
        from auto_gvpie.view_pixels import list_artifacts

        titles = {t.id: t.title for t in self._tasks_and_states()[0]}
        items = []
        for row in list_artifacts(self.settings.home):
            path = Path(row.path)
            png = path.with_suffix(".png")
            try:
                program = path.read_text(encoding="utf-8")
            except OSError:
                program = ""
            items.append(GalleryItem(row.id, row.name, titles.get(row.id) or row.task, row.width, row.height,
                                     row.ops, row.date, png.name if png.is_file() else None, program,
                                     getattr(row, "error", None)))
        return items

    # -- history -----------------------------------------------------------------------------

    def runs(self, since: float | None = None) -> list[dict]:
        store = StateStore(self.settings.state_dir, readonly=True)
        try:
            query = "SELECT * FROM runs" + (" WHERE created >= ?" if since else "") + " ORDER BY created"
            return [dict(r) for r in store.db.execute(query, (since,) if since else ())]
        finally:
            store.close()

    def history(self, since: float | None = None) -> dict:
        """Finished tasks per hour (done / failed / cancelled), attempts per solved task, time per task."""
        rows = [r for r in self.queue() if r.status in (Status.DONE, Status.FAILED, Status.CANCELLED)
                and (since is None or (r.updated or 0) >= since)]
        per_hour: dict[str, dict[str, int]] = {}
        for row in sorted(rows, key=lambda r: r.updated or 0):
            hour = time.strftime("%m-%d %H:00", time.localtime(row.updated or 0))
            per_hour.setdefault(hour, {"done": 0, "failed": 0, "cancelled": 0})[row.status] += 1
        solved: dict[int, int] = {}
        for row in rows:
            if row.status == Status.DONE:
                solved[row.attempts] = solved.get(row.attempts, 0) + 1
        seconds: dict[str, float] = {}
        for run in self.runs(since):
            seconds[run["task_id"]] = seconds.get(run["task_id"], 0.0) + (run["total_seconds"] or 0.0)
        timed = [(r.id, r.elapsed_s if r.elapsed_s is not None else seconds.get(r.id, 0.0), r.status) for r in rows]
        return {"per_hour": per_hour, "attempts_per_solved": dict(sorted(solved.items())),
                "time_per_task": sorted(timed, key=lambda t: t[0]), "finished": len(rows)}

    # -- the daemon --------------------------------------------------------------------------

    def daemon(self) -> DaemonHealth:
        from auto_gvpie.daemon import LOCK_NAME, lock_held, read_record

        lock = self.settings.state_dir / LOCK_NAME
        record = read_record(lock) if lock.exists() else None
        if record is None:
            return DaemonHealth(False, note="no daemon has run in this home")
        if not lock_held(lock):
            when = record.stopped_at or record.started_at
            note = ("stopped " if record.stopped_at else "died without stopping, after starting ") + \
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
            return DaemonHealth(False, record.pid, record.host, record.started_at, None, record.workers,
                                record.interval, note=note)
        now = time.time()
        current = [r for r in self.queue() if r.status == Status.IN_PROGRESS]
        ages = [r.heartbeat_age_s for r in current if r.heartbeat_age_s is not None]
        return DaemonHealth(True, record.pid, record.host, record.started_at, now - record.started_at, record.workers,
                            record.interval, min(ages) if ages else None, current,
                            "" if current else "idle, waiting for the task file to change")

    # -- memory ------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> tuple[list, str | None]:
        """Memory hits for `query` (as `python -m auto_gvpie.memory search`), and why there are none."""
        if not query.strip():
            return [], None
        if not (self.settings.home / "lancedb").is_dir():
            return [], "no memory yet (nothing recorded in lancedb/)"
        from auto_gvpie.memory import Memory

        memory = Memory(self.settings.home)
        try:
            if not memory.available:
                return [], f"memory unavailable: {memory.problem}"
            return memory.search(query, k), None
        finally:
            memory.close()


def _row(task: Task | None, state: TaskState | None, status: Status, now: float) -> QueueRow:
    running = status == Status.IN_PROGRESS
    elapsed = None
    if state is not None and state.claimed_at:
        elapsed = (now if running else (state.updated or now)) - state.claimed_at
    return QueueRow(
        id=task.id if task else state.id, title=task.title if task else "(no longer in the task file)",
        kind=task.kind if task else "?", status=status.value, attempts=state.attempts if state else 0,
        max_attempts=task.max_attempts if task else (state.attempts if state else 0),
        priority=task.priority if task else 0, stage=state.stage if state and running else None,
        error=state.last_error if state else None, elapsed_s=elapsed,
        heartbeat_age_s=(now - state.heartbeat) if state and running and state.heartbeat else None,
        cancel_requested=bool(state and state.cancel_requested and running),
        updated=state.updated if state else None)


def _attempt(path: Path) -> AttemptView | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    tests = [TestRun(t.get("command", ""), t.get("exit_code"), t.get("duration_s") or 0.0,
                     bool(t.get("timed_out")), t.get("output", "")) for t in data.get("tests", [])]
    tests.sort(key=lambda t: t.passed)  # failing first: that is what is read first
    judge = data.get("judge")
    return AttemptView(
        number=int(data.get("attempt", 0)), outcome=str(data.get("outcome", "?")), answer=data.get("answer", ""),
        feedback=data.get("feedback", ""), diff=data.get("diff", ""), tests=tests,
        llm_seconds=data.get("llm_seconds"), test_seconds=data.get("test_seconds"),
        total_seconds=data.get("total_seconds"), warnings=list(data.get("warnings") or []),
        localisation=data.get("localisation") if isinstance(data.get("localisation"), dict) else None,
        judge=judge if isinstance(judge, dict) else None, prompt_tokens=data.get("prompt_tokens"))


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `12h`, `2d` (or plain seconds) as seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (write e.g. 30m, 12h or 2d)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]

