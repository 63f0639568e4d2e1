"""The attempt files under artifacts/ (`<id>.attempt-N.json`): what each attempt holds, capped.

A model can answer megabytes and a test can print as much; a file per attempt of that size
fills a disk overnight, so each stored text keeps its head and tail within a cap.
"""

from __future__ import annotations

import json
from pathlib import Path

from auto_gvpie.runner import CommandResult
from auto_gvpie.state import AttemptRecord

MAX_STORED_CHARS = 64_000  # per text field (answer, feedback, one test's output)


def clip_middle(text: str, limit: int = MAX_STORED_CHARS) -> str:
    """`text` within `limit` characters, its head and tail kept and the cut said in the middle."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]}\n[... {len(text) - head - tail} characters left out ...]\n{text[-tail:]}"


def write_attempt_file(path: Path, record: AttemptRecord, tests: list[CommandResult], context: dict) -> None:
    """`context`: how the prompt was built (warnings, files shown in part, the localisation ranking)."""
    data = {
        "task": record.task.id, "attempt": record.attempt, "outcome": record.outcome,
        "answer": clip_middle(record.answer), "feedback": clip_middle(record.feedback),
        "llm_seconds": round(record.llm_seconds, 3), "test_seconds": round(record.test_seconds, 3),
        "total_seconds": round(record.total_seconds, 3),
        "tests": [{"command": t.command, "exit_code": t.exit_code, "duration_s": round(t.duration_s, 3),
                   "timed_out": t.timed_out, "output": clip_middle(t.output)} for t in tests],
        **context}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
