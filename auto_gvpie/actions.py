"""What a person can do to the queue from outside the worker: add a task, cancel one.

The command line (`--add`, `--cancel`) and the web dashboard both come here, so a task added
or cancelled from a browser goes through exactly the same safe paths: the locked append to
the user's task file, and one state-store transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from auto_gvpie.config import Settings
from auto_gvpie.inbox import FINISHED, Status, Task, append_task, read_inbox
from auto_gvpie.state import StateStore

log = logging.getLogger(__name__)


class ActionError(Exception):
    """The action cannot be done (unknown task, already finished); the message says why."""


@dataclass(frozen=True)
class Cancelled:
    task_id: str
    was: str  # the status before: pending (now cancelled) or in_progress (asked to stop)

    @property
    def message(self) -> str:
        if self.was == Status.PENDING:
            return f"cancelled {self.task_id} (it was pending)"
        return f"asked {self.task_id} to stop; its worker cancels it at the next step and removes its worktree"


def add_task(settings: Settings, fields: dict[str, Any]) -> Task:
    """Append a task to the task file (locked, never rewriting what is there) and return it with
    the id the worker will know it by (a repeated title may get a new number from the store)."""
    append_task(settings.tasks_file, fields)
    store = StateStore(settings.state_dir, readonly=True)
    try:
        task = store.resolve(read_inbox(settings.tasks_file))[-1]
    finally:
        store.close()
    log.info("added %s to %s", task.id, settings.tasks_file)
    return task


def cancel_task(settings: Settings, task_id: str) -> Cancelled:
    """Cancel a pending task at once, or ask a running one to stop (it ends `cancelled`)."""
    store = StateStore(settings.state_dir)
    try:
        # A task appended a moment ago may not have a state row yet: give it one first.
        tasks = store.sync(read_inbox(settings.tasks_file))
        if task_id not in {t.id for t in tasks} and store.get(task_id) is None:
            raise ActionError(f"no task {task_id!r} in {settings.tasks_file}")
        status = store.statuses([t for t in tasks if t.id == task_id]).get(task_id)
        if status in FINISHED:
            raise ActionError(f"{task_id} is already {status}; nothing to cancel")
        was = store.request_cancel(task_id)
        if was is None or was in FINISHED:
            raise ActionError(f"{task_id} is already {was or 'gone'}; nothing to cancel")
    finally:
        store.close()
    log.info("cancel %s (was %s)", task_id, was)
    return Cancelled(task_id, was)
