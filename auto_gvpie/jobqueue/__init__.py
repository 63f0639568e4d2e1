"""Several machines on one task file: a dispatcher owns the user's files, workers run the attempts.

    dispatcher (--daemon --queue URL)          workers (--worker --queue URL), any machine
    reads the inbox, claims a task,   ──job──▶ fetch the base commit, run the attempts with the
    recalls memory, enqueues           (RQ)    same Engine as --once, return patch, records,
    applies the result: checkout,   ◀─result─  memory rows and artifacts as the job's result
    state store, LanceDB, artifacts/

The queue is RQ on Redis (why, and the settings for long jobs: docs/ARCHITECTURE.md). Only the
dispatcher writes the user's files; a job's effect is keyed by task id and dispatch round, so a
job run twice (redelivered after its worker died) takes effect once. Importing this package
imports neither RQ nor Redis: the plain daemon and --once never need them.
"""

from __future__ import annotations

import json
from pathlib import Path

# The shape of a job and of its result. A worker and a dispatcher must speak the same one; the
# queue's name carries it, so neither ever takes the other's jobs, and a worker refuses to start
# against a dispatcher of another protocol.
PROTOCOL = 1


class QueueError(Exception):
    """The queue cannot be used (a bad URL, Redis unreachable at start); the message says why."""


class ProtocolMismatch(QueueError):
    """This worker and the dispatcher on the queue speak different job protocols."""


QUEUE_FILE = "queue.json"  # in the state dir: the queue this home dispatches to, for --status


def queue_url(state_dir: Path) -> str | None:
    """The queue a dispatcher of this home last used (for --status)."""
    try:
        return json.loads((state_dir / QUEUE_FILE).read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
