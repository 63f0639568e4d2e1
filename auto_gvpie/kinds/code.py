"""Code tasks: an edit applied in a git worktree, checked by the task's own test commands."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from auto_gvpie import prompts
from auto_gvpie.config import CONFIG_FILE, Settings
from auto_gvpie.edits import EditRefused, apply_answer
from auto_gvpie.kinds import AttemptResult, Delivery, Job, Stopped
from auto_gvpie.state import AttemptRecord
from auto_gvpie.workspace import Worktree, apply_to_checkout

log = logging.getLogger(__name__)


def service_paths(settings: Settings) -> list[str]:
    """The service's own files as paths in the repository (when the home lies inside it): never
    shown to the model as inputs and never edit targets, or an answer could queue its own commands."""
    repo = settings.repo.resolve()
    home = settings.home.resolve()
    own = [settings.tasks_file, home / CONFIG_FILE, settings.state_dir, settings.artifacts_dir, home / "lancedb"]
    return sorted({p.resolve().relative_to(repo).as_posix() for p in own if p.resolve().is_relative_to(repo)
                   and p.resolve() != repo})


class CodeKind:
    name = "code"
    schema = None

    @contextmanager
    def workspace(self, job: Job) -> Iterator[None]:
        with Worktree(job.settings.repo, job.settings.state_dir, job.task.id) as worktree:
            job.worktree = worktree
            job.baseline = job.latest_tests = job.run_tests(job, 0, "baseline tests")
            yield

    def prompt(self, job: Job, recall: str) -> prompts.Prompt:
        failing = "\n".join(f"$ {t.command}   (exit code {t.exit_code})\n{t.output.strip()}"
                            for t in job.latest_tests if not t.passed)
        settings = job.settings
        prompt = prompts.code_prompt(job.task, job.worktree.path, recall, job.history, settings.edit_format,
                                     job.llm.context_window, settings.max_answer_tokens, job.llm.count_tokens,
                                     failing, protected=service_paths(settings))
        if prompt.left_out:
            log.info("prompt for %s shortened: %s", job.task.id, "; ".join(prompt.left_out))
        return prompt

    def result(self, job: Job, number: int, answer: str, prompt: prompts.Prompt) -> AttemptResult:
        task = job.task
        job.stage(number, "applying edit")
        try:
            applied = apply_answer(job.worktree.path, answer, prompt.edit_format or "auto", task.inputs,
                                   protected=service_paths(job.settings))
        except EditRefused as exc:
            log.info("attempt %d of %s: edit refused: %s", number, task.id, str(exc).splitlines()[0])
            return AttemptResult("refused", f"Your edit was refused, nothing was changed:\n{exc}", answer,
                                 summary=f"edit refused: {str(exc).strip().splitlines()[0]}")
        log.info("attempt %d of %s: edit applied to %s", number, task.id, ", ".join(applied.files))
        tests = job.run_tests(job, number, "running tests")
        failing = [t for t in tests if not t.passed]
        log.info("attempt %d of %s: tests %s", number, task.id, "fail" if failing else "pass")
        if not failing:
            return AttemptResult("passed", "", answer, tests, "patch", None)
        if any(t.stopped for t in failing):
            raise Stopped()
        before = {t.command: t.passed for t in job.baseline}
        lines = [f"Your edit applied to {', '.join(applied.files)}, but tests fail:"]
        for test in failing:
            blame = ("it passed before your change, so your change broke it" if before.get(test.command)
                     else "it was already failing before your change")
            status = "timed out" if test.timed_out else f"exit code {test.exit_code}"
            lines.append(f"$ {test.command}   ({status}; {blame})\n{test.output.strip()}")
        summary = "tests fail: " + "; ".join(
            f"{t.command} ({'timed out' if t.timed_out else f'exit {t.exit_code}'})" for t in failing)
        return AttemptResult("tests_failed", "\n".join(lines), answer, tests, "patch", None, summary)

    def deliver(self, job: Job, number: int, result: AttemptResult) -> Delivery:
        """The combined patch goes to artifacts/ and, unless told otherwise, into the user's checkout."""
        settings = job.settings
        patch = job.worktree.diff()
        patch_path: Path = settings.artifacts_dir / f"{job.task.id}.patch"
        patch_path.write_text(patch, encoding="utf-8")
        applied = apply_to_checkout(settings.repo, patch, settings.apply, branch=f"gvpie/{job.task.id}")
        log.info("patch for %s: %s", job.task.id, applied.message)
        return Delivery(applied.message, AttemptRecord(job.task, number, "patch_saved", answer=patch,
                                                       artifact_kind="patch", artifact_path=str(patch_path)))
