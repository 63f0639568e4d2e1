"""The memory a queue worker's engine is given: it recalls what the job carries (the dispatcher's
LanceDB was searched when the task was dispatched) and keeps what the engine would store, for the
job's result. So a worker needs no LanceDB of its own, and only the dispatcher writes memory."""

from __future__ import annotations

from auto_gvpie.state import AttemptRecord


class RecordingMemory:
    def __init__(self, recall: str):
        self._recall = recall
        self.records: list[AttemptRecord] = []

    def recall(self, task_id: str, title: str, description: str, kind: str, budget_tokens: int = 600) -> str:
        return self._recall

    def remember(self, record: AttemptRecord) -> None:
        self.records.append(record)

    def record_task(self, *args, **kwargs) -> None:
        pass  # the dispatcher writes the task's row from the outcome it applies

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
