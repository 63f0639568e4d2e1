"""Task kinds: what differs between a code task and a pixel task, behind one small seam.

The engine runs every task the same way (claim, attempts, records, retry); a `TaskKind`
says where the task works, what the model is asked, how an answer becomes a result and
what a passing result delivers. A new kind (a proposal, a review) is one more module here.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from auto_gvpie import prompts
from auto_gvpie.config import Settings
from auto_gvpie.inbox import Task
from auto_gvpie.llm import LLM
from auto_gvpie.runner import CommandResult
from auto_gvpie.state import AttemptRecord
from auto_gvpie.workspace import Worktree


class Stopped(Exception):
    """A stop was requested (SIGINT/SIGTERM: the task goes back to pending; a cancel request: it ends cancelled)."""


@dataclass
class AttemptResult:
    """What one attempt ended with; `feedback` is what the next prompt tells the model."""
    outcome: str  # passed | refused | tests_failed | bad_answer | invalid_program | picture_rejected | judge_rejected
    feedback: str = ""
    answer: str = ""
    tests: list[CommandResult] = field(default_factory=list)
    artifact_kind: str | None = None
    artifact_path: str | None = None
    summary: str = ""  # one line for --status
    diff: str = ""  # what the answer changed in the worktree (code tasks), kept in the attempt file


@dataclass
class Job:
    """One task's run: the engine's services the kinds use, and what they keep between attempts."""
    task: Task
    settings: Settings
    llm: LLM
    stage: Callable[[int, str], None]  # attempt number, what is happening (heartbeat + progress)
    run: Callable[[Sequence[str], int, str], list[CommandResult]]  # commands, attempt, stage: run as tests run
    worktree: Worktree | None = None
    baseline: list[CommandResult] = field(default_factory=list)  # the tests on the untouched tree
    latest_tests: list[CommandResult] = field(default_factory=list)  # the newest results: "failing now"
    history: list[prompts.Attempt] = field(default_factory=list)


@dataclass
class Delivery:
    """What a passing result became: a line for the user, and a memory row when it left a file."""
    note: str | None = None
    record: AttemptRecord | None = None


class TaskKind(Protocol):
    name: str
    schema: dict | None  # structured output asked of the server, if any

    def workspace(self, job: Job) -> AbstractContextManager[None]:
        """Where the attempts work (a worktree with its baseline tests, or nothing); cleaned up on exit."""

    def prompt(self, job: Job, recall: str) -> prompts.Prompt:
        ...

    def result(self, job: Job, number: int, answer: str, prompt: prompts.Prompt) -> AttemptResult:
        ...

    def deliver(self, job: Job, number: int, result: AttemptResult) -> Delivery:
        ...

    def snapshot(self, job: Job) -> object:
        """The workspace's state before a candidate answer is tried (None when answers leave no state)."""

    def reset(self, job: Job, snapshot: object) -> None:
        """Back to `snapshot`, so the next candidate starts from the same tree."""

    def work(self, job: Job, result: AttemptResult) -> str:
        """What the judge is shown of a result that passed its checks."""

    def notes(self) -> list[str]:
        """What the user should know about how the task was approached (files chosen), for --status."""

    def details(self) -> dict:
        """The same in full, for the attempt files."""


def kind_for(task: Task) -> TaskKind:
    from auto_gvpie.kinds.code import CodeKind
    from auto_gvpie.kinds.pixel import PixelKind

    return {"code": CodeKind, "pixel": PixelKind}[task.kind]()
