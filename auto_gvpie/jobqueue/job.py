"""What travels through the queue: a job (the task and what a worker needs to run it) and its
result (what the dispatcher records). Plain JSON, so a worker on another machine needs nothing
of the dispatcher's but the git URL."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import asdict, dataclass, field

from auto_gvpie.inbox import Status, Task
from auto_gvpie.jobqueue import PROTOCOL
from auto_gvpie.state import AttemptRecord

OWNER_PREFIX = "queue:"  # the lease owner of a dispatched task: "queue:<job id>"
# The dispatcher's settings that decide how a task is attempted; a worker takes its own LLM,
# sandbox and scratch space.
TASK_SETTINGS = ("edit_format", "samples", "max_answer_tokens", "context_window", "test_timeout", "setup",
                 "code_index", "gpu", "judge", "judge_threshold")


def job_id(task_id: str, round_: int) -> str:
    """Deterministic: the same task and round always give the same id (RQ ids allow [A-Za-z0-9_-])."""
    return f"gvpie-{hashlib.sha1(task_id.encode()).hexdigest()[:16]}-r{round_}"


def owner_of(job: str) -> str:
    return OWNER_PREFIX + job


def task_to_json(task: Task) -> dict:
    return asdict(task)


def task_from_json(data: dict) -> Task:
    data = dict(data)
    for key in ("inputs", "tests", "depends_on", "tags"):
        data[key] = tuple(data.get(key) or ())
    # The id is final (the dispatcher resolved it); the worker's own store must not derive another.
    data.update(title_key=None, status=Status.PENDING)
    return Task(**data)


@dataclass
class JobSpec:
    job_id: str
    round: int
    task: dict
    base: str  # the commit the attempts start from
    git_url: str  # where to fetch it
    recall: str  # the "relevant memory" the dispatcher's LanceDB holds for this task
    attempts_before: int  # attempts earlier rounds made (a round released by a stop or a down LLM)
    settings: dict = field(default_factory=dict)
    protocol: int = PROTOCOL

    @classmethod
    def from_json(cls, data: dict) -> JobSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class JobResult:
    job_id: str
    task_id: str
    status: str  # done | failed | pending (released: the LLM or the repository could not be used, or a stop)
    attempts: int
    error: str | None
    worker: str
    artifacts_dir: str  # the worker's, as the paths in records name it (the dispatcher rewrites them)
    artifacts: dict[str, str] = field(default_factory=dict)  # file name under artifacts/ -> base64
    runs: list[dict] = field(default_factory=list)  # the worker's state-store rows for the task
    memory: list[dict] = field(default_factory=list)  # AttemptRecords (without the task) for LanceDB
    seconds: float = 0.0
    started_at: float = 0.0  # wall clock, when the worker began the job
    score: int | None = None  # the judge's score of the result kept (--judge), and its verdict
    verdict: str | None = None
    protocol: int = PROTOCOL

    @classmethod
    def from_json(cls, data: dict) -> JobResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def files(self) -> dict[str, bytes]:
        return {name: base64.b64decode(data) for name, data in self.artifacts.items()}


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def record_to_json(record: AttemptRecord) -> dict:
    data = asdict(record)
    del data["task"]
    return data


def record_from_json(task: Task, data: dict) -> AttemptRecord:
    names = {f.name for f in dataclasses.fields(AttemptRecord)} - {"task"}
    values = {k: v for k, v in data.items() if k in names}
    values["error_lines"] = tuple(values.get("error_lines") or ())
    return AttemptRecord(task, **values)
