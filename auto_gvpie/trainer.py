"""The trainer's books (`--status --scores`): a score for every task the worker finished, a score
per skill tag, the recent trend, and from it the size of task worth trying next.

Read from the state store and the task file only, so it is the same whichever process ran the
tasks. A task's tags are the ones written in the file (`tags`), else inferred: its kind, the
languages of its inputs and their top directory ("area:src").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

from auto_gvpie.codeindex import language_of
from auto_gvpie.inbox import Status, Task
from auto_gvpie.state import TaskState

log = logging.getLogger(__name__)

WINDOW = 5  # the trend is the success rate of the last WINDOW finished tasks
MIN_TREND = 3  # fewer finished tasks than this say nothing about difficulty yet
RAISE_AT, LOWER_AT = 0.8, 0.4  # success rates at which the next task should be larger / smaller
STALE_AFTER = 10  # a skill not practised in this many finished tasks is due again


def infer_tags(task: Task) -> tuple[str, ...]:
    if task.tags:
        return task.tags
    tags = [task.kind]
    for path in task.inputs:
        language = language_of(path)
        if language:
            tags.append(language)
        parts = PurePosixPath(path).parts
        tags.append(f"area:{parts[0]}" if len(parts) > 1 else "area:.")
    return tuple(dict.fromkeys(tags))


@dataclass(frozen=True)
class TaskScore:
    task_id: str
    title: str
    tags: tuple[str, ...]
    status: str  # done | failed
    attempts: int
    max_attempts: int
    judge: int | None
    seconds: float
    finished: float

    @property
    def value(self) -> float:
        """0 for a failed task; a done one scores 1.0 on its first attempt, down to 0.5 when it needed
        all of them, times the judge's score out of 10 when it was judged."""
        if self.status != Status.DONE:
            return 0.0
        retries = max(0, self.attempts - 1) / max(1, self.max_attempts - 1) if self.max_attempts > 1 else 0.0
        return round((1.0 - 0.5 * retries) * (self.judge / 10 if self.judge is not None else 1.0), 3)


@dataclass(frozen=True)
class SkillScore:
    tag: str
    tasks: int
    done: int
    mean_value: float
    mean_attempts: float
    last_seen: int  # how many finished tasks ago it was last practised (0: the latest)

    @property
    def success_rate(self) -> float:
        return self.done / self.tasks


@dataclass(frozen=True)
class Scores:
    tasks: list[TaskScore]  # in the order they finished
    skills: list[SkillScore]
    trend: list[float]  # after each finished task, the success rate of the last WINDOW
    difficulty: str  # larger | same | smaller: what the next proposed task should be
    why: str
    due: list[str]  # skills not practised for a while

    def as_json(self) -> dict:
        return {
            "tasks": [{"id": t.task_id, "title": t.title, "tags": list(t.tags), "status": t.status,
                       "attempts": t.attempts, "judge": t.judge, "seconds": round(t.seconds, 1), "score": t.value}
                      for t in self.tasks],
            "skills": [{"tag": s.tag, "tasks": s.tasks, "done": s.done, "success_rate": round(s.success_rate, 3),
                        "score": round(s.mean_value, 3), "attempts": round(s.mean_attempts, 2),
                        "last_seen": s.last_seen} for s in self.skills],
            "trend": self.trend, "difficulty": self.difficulty, "why": self.why, "due": self.due}


def score(tasks: list[Task], states: Mapping[str, TaskState], seconds: Mapping[str, float]) -> Scores:
    """The books for the tasks the worker finished itself (a task marked done in the file, or
    cancelled, says nothing about the worker's skill)."""
    finished = []
    for task in tasks:
        state = states.get(task.id)
        if state is None or state.status not in (Status.DONE, Status.FAILED) or not state.attempts:
            continue
        finished.append(TaskScore(task.id, task.title, infer_tags(task), state.status, state.attempts,
                                  task.max_attempts, state.score, seconds.get(task.id, 0.0),
                                  state.updated or time.time()))
    finished.sort(key=lambda t: t.finished)
    trend = []
    for i in range(len(finished)):
        recent = finished[max(0, i + 1 - WINDOW):i + 1]
        trend.append(round(sum(t.status == Status.DONE for t in recent) / len(recent), 3))
    skills = []
    for tag in dict.fromkeys(tag for t in finished for tag in t.tags):
        mine = [(i, t) for i, t in enumerate(finished) if tag in t.tags]
        skills.append(SkillScore(tag, len(mine), sum(t.status == Status.DONE for _, t in mine),
                                 sum(t.value for _, t in mine) / len(mine),
                                 sum(t.attempts for _, t in mine) / len(mine), len(finished) - 1 - mine[-1][0]))
    skills.sort(key=lambda s: (-s.tasks, s.tag))
    difficulty, why = _difficulty(trend)
    due = [s.tag for s in skills if s.last_seen >= STALE_AFTER]
    return Scores(finished, skills, trend, difficulty, why, due)


def _difficulty(trend: list[float]) -> tuple[str, str]:
    if len(trend) < MIN_TREND:
        return "same", f"only {len(trend)} finished task(s); {MIN_TREND} are needed for a trend"
    rate = trend[-1]
    window = min(WINDOW, len(trend))
    if rate >= RAISE_AT:
        return "larger", f"{rate:.0%} of the last {window} tasks were done (>= {RAISE_AT:.0%})"
    if rate <= LOWER_AT:
        return "smaller", f"only {rate:.0%} of the last {window} tasks were done (<= {LOWER_AT:.0%})"
    return "same", f"{rate:.0%} of the last {window} tasks were done"


def chart(scores: Scores, path: Path) -> Path:
    """A PNG: one bar per finished task (its score; green done, red failed) and the trend line."""
    from PIL import Image, ImageDraw

    width, height, pad = 640, 280, 36
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    plot_w, plot_h = width - 2 * pad, height - 2 * pad
    draw.rectangle([pad, pad, pad + plot_w, pad + plot_h], outline=(180, 180, 180))
    for level in (0.5, 1.0):
        y = pad + plot_h - level * plot_h
        draw.line([pad, y, pad + plot_w, y], fill=(225, 225, 225))
        draw.text((4, y - 6), f"{level:.1f}", fill=(90, 90, 90))
    n = len(scores.tasks)
    draw.text((pad, 10), f"task scores ({n} finished) and success rate of the last {WINDOW}: "
                         f"next task {scores.difficulty}", fill=(30, 30, 30))
    if n:
        step = plot_w / n
        points = []
        for i, (task, rate) in enumerate(zip(scores.tasks, scores.trend)):
            x0 = pad + i * step
            top = pad + plot_h - task.value * plot_h
            colour = (60, 160, 80) if task.status == Status.DONE else (200, 70, 60)
            draw.rectangle([x0 + step * 0.15, min(top, pad + plot_h - 2), x0 + step * 0.85, pad + plot_h],
                           fill=colour)
            points.append((x0 + step / 2, pad + plot_h - rate * plot_h))
        if len(points) > 1:
            draw.line(points, fill=(40, 80, 200), width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(40, 80, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
