"""The dispatcher's record of what it handed to the queue (table `dispatches` in the home's
state.db): one row per job, keyed by its deterministic id (task id + round).

A row's state moves queued → applying → applied (or stale: the task was taken back meanwhile).
The spec is kept, so a job Redis lost (restarted without persistence) is enqueued again under the
same id; and a result is applied only by moving its row out of `queued`, so a job that ran twice
takes effect once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

QUEUED, APPLYING, APPLIED, STALE = "queued", "applying", "applied", "stale"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatches (
    job_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, round INTEGER NOT NULL, state TEXT NOT NULL,
    spec TEXT NOT NULL, worker TEXT, created REAL NOT NULL, updated REAL NOT NULL, picked_up REAL);
CREATE INDEX IF NOT EXISTS dispatches_task ON dispatches (task_id);
"""


@dataclass
class Dispatch:
    job_id: str
    task_id: str
    round: int
    state: str
    spec: dict
    worker: str | None
    created: float


class Ledger:
    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(state_dir / "state.db", timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def next_round(self, task_id: str) -> int:
        (top,) = self.db.execute("SELECT MAX(round) FROM dispatches WHERE task_id=?", (task_id,)).fetchone()
        return (top or 0) + 1

    def rounds(self, task_id: str) -> int:
        (n,) = self.db.execute("SELECT COUNT(*) FROM dispatches WHERE task_id=?", (task_id,)).fetchone()
        return n

    def add(self, job_id: str, task_id: str, round_: int, spec: dict) -> None:
        now = time.time()
        self.db.execute("INSERT INTO dispatches VALUES (?, ?, ?, ?, ?, NULL, ?, ?, NULL)",
                        (job_id, task_id, round_, QUEUED, json.dumps(spec), now, now))

    def open(self) -> list[Dispatch]:
        """The jobs whose result is not applied yet, oldest first."""
        return [self._row(r) for r in self.db.execute(
            "SELECT * FROM dispatches WHERE state IN (?, ?) ORDER BY created", (QUEUED, APPLYING))]

    def get(self, job_id: str) -> Dispatch | None:
        row = self.db.execute("SELECT * FROM dispatches WHERE job_id=?", (job_id,)).fetchone()
        return None if row is None else self._row(row)

    def take(self, job_id: str, worker: str, picked_up: float | None = None) -> bool:
        """queued → applying; False when the row was already taken (a second result for one job).
        `picked_up`: when the worker started it (pickup latency = picked_up - created)."""
        cur = self.db.execute("UPDATE dispatches SET state=?, worker=?, picked_up=?, updated=? WHERE job_id=? AND state=?",
                              (APPLYING, worker, picked_up, time.time(), job_id, QUEUED))
        return cur.rowcount == 1

    def set(self, job_id: str, state: str) -> None:
        self.db.execute("UPDATE dispatches SET state=?, updated=? WHERE job_id=?", (state, time.time(), job_id))

    def _row(self, row: tuple) -> Dispatch:
        job_id, task_id, round_, state, spec, worker, created, _, _ = row
        return Dispatch(job_id, task_id, round_, state, json.loads(spec), worker, created)
