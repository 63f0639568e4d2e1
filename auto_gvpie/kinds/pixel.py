"""Pixel tasks: a pixel program (JSON), validated, rendered to PNG, optionally run on the GPU."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

from auto_gvpie import prompts
from auto_gvpie.kinds import AttemptResult, Delivery, Job
from auto_gvpie.pixels.program import ValidationError, program_from_answer
from auto_gvpie.pixels.render import render, save_png

log = logging.getLogger(__name__)


class PixelKind:
    name = "pixel"
    schema = prompts.pixel_schema()

    def workspace(self, job: Job) -> nullcontext:
        return nullcontext()  # a picture needs no checkout

    def prompt(self, job: Job, recall: str) -> prompts.Prompt:
        return prompts.pixel_prompt(job.task, recall, job.history, job.llm.context_window,
                                    job.settings.max_answer_tokens, job.llm.count_tokens)

    def result(self, job: Job, number: int, answer: str, prompt: prompts.Prompt) -> AttemptResult:
        task = job.task
        job.stage(number, "validating pixel program")
        try:
            document, program = program_from_answer(answer)
        except ValidationError as exc:
            log.info("attempt %d of %s: invalid pixel program: %s", number, task.id, exc)
            return AttemptResult("invalid_program", f"The pixel program is invalid: {exc}", answer,
                                 summary=f"invalid pixel program: {exc}")
        job.stage(number, "rendering")
        artifacts = job.settings.artifacts_dir
        program_path = artifacts / f"{task.id}.json"
        program_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        save_png(render(program), artifacts / f"{task.id}.png")
        if job.settings.gpu:
            _gpu_check(task.id, program_path, artifacts)
        return AttemptResult("passed", "", answer, [], "pixel", str(program_path))

    def deliver(self, job: Job, number: int, result: AttemptResult) -> Delivery:
        return Delivery()  # the program and its PNG are already in artifacts/

    def snapshot(self, job: Job) -> None:
        return None  # the first valid program wins; nothing to undo for the next candidate

    def reset(self, job: Job, snapshot: object) -> None:
        pass

    def notes(self) -> list[str]:
        return []

    def details(self) -> dict:
        return {}


def _gpu_check(task_id: str, program_path: Path, artifacts: Path) -> None:
    """Also execute on the GPU runner when asked; a missing GPU is noted, not a task failure."""
    from auto_gvpie.pixels.gpu import GPUError, render_gpu
    try:
        report = render_gpu(program_path, artifacts / f"{task_id}.gpu.png")
        log.info("GPU render of %s on %s: %s", task_id, report.get("adapter", {}).get("name"), report.get("timings_ms"))
    except GPUError as exc:
        log.warning("GPU render of %s skipped: %s", task_id, exc)
