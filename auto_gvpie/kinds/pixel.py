"""Pixel tasks: a pixel program (JSON), validated, rendered to PNG, optionally run on the GPU, and
accepted only when the render report finds nothing visibly wrong with the picture."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

from auto_gvpie import prompts
from auto_gvpie.kinds import AttemptResult, Delivery, Job
from auto_gvpie.pixels.program import ValidationError, program_from_answer
from auto_gvpie.pixels.render import ascii_preview, render, save_png
from auto_gvpie.pixels.report import render_report

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
        image = render(program)
        save_png(image, artifacts / f"{task.id}.png")
        if job.settings.gpu:
            _gpu_check(task.id, program_path, artifacts)
        job.stage(number, "checking the picture")
        problems = render_report(program, image, f"{task.title}\n{task.description}")
        if problems:
            log.info("attempt %d of %s: picture rejected: %s", number, task.id, problems[0])
            feedback = ("The program is valid, but the picture does not do what the task asks yet:\n"
                        + "\n".join(f"- {p}" for p in problems) + "\nSend the whole corrected program.")
            return AttemptResult("picture_rejected", feedback, answer, [], "pixel", str(program_path),
                                 summary=f"picture rejected: {problems[0]}")
        return AttemptResult("passed", "", answer, [], "pixel", str(program_path))

    def deliver(self, job: Job, number: int, result: AttemptResult) -> Delivery:
        return Delivery()  # the program and its PNG are already in artifacts/

    def snapshot(self, job: Job) -> dict[Path, bytes]:
        """The task's program and pictures in artifacts/ as they are: each candidate overwrites
        them, and the one kept (the best sample, the judge's best) must be what is left there."""
        return {path: path.read_bytes() for path in _outputs(job)}

    def reset(self, job: Job, snapshot: object) -> None:
        for path in _outputs(job):
            if path not in snapshot:
                path.unlink()
        for path, data in snapshot.items():
            path.write_bytes(data)

    def work(self, job: Job, result: AttemptResult) -> str:
        """For the judge: the program, and the picture as text (brighter characters, brighter pixels)."""
        _, program = program_from_answer(result.answer)
        return (f"The pixel program:\n{result.answer.strip()}\n\nIts picture "
                f"({program.canvas.width}x{program.canvas.height}, as a luminance sketch):\n"
                f"{ascii_preview(render(program), 64, 32)}")

    def notes(self) -> list[str]:
        return []

    def details(self) -> dict:
        return {}


def _outputs(job: Job) -> list[Path]:
    artifacts, task_id = job.settings.artifacts_dir, job.task.id
    return [p for p in (artifacts / f"{task_id}.json", artifacts / f"{task_id}.png", artifacts / f"{task_id}.gpu.png")
            if p.exists()]


def _gpu_check(task_id: str, program_path: Path, artifacts: Path) -> None:
    """Also execute on the GPU runner when asked; a missing GPU is noted, not a task failure."""
    from auto_gvpie.pixels.gpu import GPUError, render_gpu
    try:
        report = render_gpu(program_path, artifacts / f"{task_id}.gpu.png")
        log.info("GPU render of %s on %s: %s", task_id, report.get("adapter", {}).get("name"), report.get("timings_ms"))
    except GPUError as exc:
        log.warning("GPU render of %s skipped: %s", task_id, exc)
