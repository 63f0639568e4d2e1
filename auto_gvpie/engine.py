"""One task, start to finish: claim, isolate, ask, apply, test, feed back, retry, record.

Read `Engine.run_task` top to bottom; the two task kinds differ only in what an
attempt produces (an edit tested in a worktree, or a pixel program rendered).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from auto_gvpie import prompts
from auto_gvpie.config import Settings
from auto_gvpie.edits import EditRefused, apply_answer
from auto_gvpie.llm import LLM, BadAnswer, Completion, LLMUnreachable
from auto_gvpie.pixels.program import ValidationError, parse_program
from auto_gvpie.pixels.render import render, save_png
from auto_gvpie.runner import CommandResult, run_command
from auto_gvpie.tasks import StateStore, Task, read_inbox, runnable
from auto_gvpie.workspace import Worktree, apply_to_checkout

if TYPE_CHECKING:  # the engine is handed a Memory; importing LanceDB is the caller's choice
    from auto_gvpie.memory import Memory

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, str], None]  # task id, attempt, stage text


class Stopped(Exception):
    """A stop was requested (SIGINT/SIGTERM); the task went back to pending."""


@dataclass
class Outcome:
    task_id: str
    status: str  # done | failed | pending (released)
    attempts: int
    artifacts: list[str] = field(default_factory=list)
    error: str | None = None
    note: str | None = None  # e.g. what happened to the patch in the user's checkout

    def as_json(self) -> dict:
        return {"id": self.task_id, "status": self.status, "attempts": self.attempts,
                "artifacts": self.artifacts, "error": self.error}


@dataclass
class AttemptResult:
    """What one attempt ended with; `feedback` is what the next prompt tells the model."""
    outcome: str  # passed | refused | tests_failed | bad_answer | invalid_program
    feedback: str = ""
    answer: str = ""
    tests: list[CommandResult] = field(default_factory=list)
    artifact_kind: str | None = None
    artifact_path: str | None = None
    summary: str = ""  # one line for --status


class Engine:
    def __init__(self, settings: Settings, store: StateStore, llm: LLM, memory: Memory, owner: str,
                 progress: ProgressFn | None = None, should_stop: Callable[[], bool] = lambda: False,
                 on_outcome: Callable[[Outcome], None] = lambda outcome: None):
        self.settings = settings
        self.store = store
        self.llm = llm
        self.memory = memory
        self.owner = owner
        self.progress = progress or (lambda task_id, attempt, stage: None)
        self.should_stop = should_stop
        self.on_outcome = on_outcome  # told as each task ends, even if the drain is cut short later
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)

    # -- the loop -----------------------------------------------------------------------------

    def run_task(self, task: Task) -> Outcome | None:
        """Run one pending task; None when another worker claimed it first."""
        if not self.store.claim(task.id, self.owner):
            return None
        log.info("picked %s (%s): %s", task.id, task.kind, task.title)
        first = (self.store.get(task.id).attempts or 0) + 1
        try:
            if task.kind == "pixel":
                outcome = self._attempts(task, first, worktree=None)
            else:
                with Worktree(self.settings.repo, self.settings.state_dir, task.id) as worktree:
                    outcome = self._attempts(task, first, worktree)
        except (LLMUnreachable, Stopped, KeyboardInterrupt) as exc:
            self.store.release(task.id, self.owner)
            log.info("released %s back to pending: %s", task.id, type(exc).__name__)
            raise
        except Exception as exc:
            # A bug or an environment failure must not leave the task claimed forever.
            log.exception("task %s crashed", task.id)
            outcome = Outcome(task.id, "failed", first - 1, error=f"internal error: {exc}")
        self.store.finish(task.id, self.owner, outcome.status, outcome.error, outcome.artifacts)
        self.memory.record_task(task.id, task.title, task.kind, task.description, outcome.status,
                                outcome.attempts, outcome.error)
        self.memory.flush()
        log.info("%s %s after %d attempt(s)%s", outcome.status, task.id, outcome.attempts,
                 f": {outcome.error}" if outcome.error else "")
        self.on_outcome(outcome)
        return outcome

    def _attempts(self, task: Task, first: int, worktree: Worktree | None) -> Outcome:
        baseline = self._run_tests(task, worktree, first, "baseline tests") if worktree else []
        history: list[prompts.Attempt] = []
        latest_tests = baseline  # the tree's newest test results; what the prompt shows as "failing now"
        last_error = "no attempts left" if first > task.max_attempts else None
        for number in range(first, task.max_attempts + 1):
            if self.should_stop():
                raise Stopped()
            started = time.monotonic()
            recall = self.memory.recall(task.id, task.title, task.description, task.kind)
            result, llm_seconds = self._attempt(task, number, worktree, recall, history, baseline, latest_tests)
            latest_tests = result.tests or latest_tests
            total = time.monotonic() - started
            test_seconds = sum(t.duration_s for t in result.tests)
            self._record(task, number, result, llm_seconds, test_seconds, total)
            if result.outcome == "passed":
                return self._succeed(task, number, worktree, result)
            last_error = result.summary or result.outcome
            history.append(prompts.Attempt(number, result.answer, result.outcome, result.feedback))
        return Outcome(task.id, "failed", max(task.max_attempts, first - 1), self._artifacts(task), last_error)

    def _attempt(self, task: Task, number: int, worktree: Worktree | None, recall: str,
                 history: list[prompts.Attempt], baseline: list[CommandResult],
                 latest_tests: list[CommandResult]) -> tuple[AttemptResult, float]:
        if worktree is None:
            prompt = prompts.pixel_prompt(task, recall, history)
        else:
            failing = "\n".join(f"$ {t.command}   (exit code {t.exit_code})\n{t.output.strip()}"
                                for t in latest_tests if not t.passed)
            prompt = prompts.code_prompt(task, worktree.path, recall, history, self.settings.edit_format,
                                         self.llm.context_window, self.settings.max_answer_tokens,
                                         self.llm.count_tokens, failing)
            if prompt.left_out:
                log.info("prompt for %s shortened: %s", task.id, "; ".join(prompt.left_out))
        started = time.monotonic()
        try:
            completion = self._ask(task, number, prompt, pixel=worktree is None)
        except BadAnswer as exc:
            log.info("attempt %d of %s: unusable answer (%s)", number, task.id, exc.reason)
            feedback = f"Your answer could not be used ({exc.reason}): {exc}"
            if exc.reason == "truncated":
                feedback += "\nThe answer was cut off: answer shorter (only the changed parts)."
            return (AttemptResult("bad_answer", feedback, exc.partial_text, summary=f"unusable LLM answer: {exc}"),
                    time.monotonic() - started)
        llm_seconds = time.monotonic() - started
        log.info("attempt %d of %s: LLM answered in %d ms", number, task.id, llm_seconds * 1000)
        if worktree is None:
            return self._pixel_result(task, number, completion.text), llm_seconds
        return self._code_result(task, number, worktree, completion.text, prompt.edit_format, baseline), llm_seconds

    def _ask(self, task: Task, number: int, prompt: prompts.Prompt, pixel: bool) -> Completion:
        tokens = 0

        def on_token(_: str) -> None:
            nonlocal tokens
            tokens += 1
            if tokens % 8 == 1:
                self.progress(task.id, number, f"LLM answering ({tokens} tokens)")

        self._stage(task, number, f"asking {self.llm.model}")
        return self.llm.complete(prompt.messages, json_schema=prompts.pixel_schema() if pixel else None,
                                 max_tokens=prompt.max_tokens or self.settings.max_answer_tokens, on_token=on_token)

    # -- what an attempt produces -------------------------------------------------------------

    def _code_result(self, task: Task, number: int, worktree: Worktree, answer: str, fmt: str | None,
                     baseline: list[CommandResult]) -> AttemptResult:
        self._stage(task, number, "applying edit")
        try:
            applied = apply_answer(worktree.path, answer, fmt or "auto", task.inputs)
        except EditRefused as exc:
            log.info("attempt %d of %s: edit refused: %s", number, task.id, str(exc).splitlines()[0])
            return AttemptResult("refused", f"Your edit was refused, nothing was changed:\n{exc}", answer,
                                 summary=f"edit refused: {str(exc).strip().splitlines()[0]}")
        log.info("attempt %d of %s: edit applied to %s", number, task.id, ", ".join(applied.files))
        tests = self._run_tests(task, worktree, number, "running tests")
        failing = [t for t in tests if not t.passed]
        log.info("attempt %d of %s: tests %s", number, task.id, "fail" if failing else "pass")
        if not failing:
            return AttemptResult("passed", "", answer, tests, "patch", None)
        before = {t.command: t.passed for t in baseline}
        lines = [f"Your edit applied to {', '.join(applied.files)}, but tests fail:"]
        for test in failing:
            if test.stopped:
                raise Stopped()
            blame = ("it passed before your change, so your change broke it" if before.get(test.command)
                     else "it was already failing before your change")
            status = "timed out" if test.timed_out else f"exit code {test.exit_code}"
            lines.append(f"$ {test.command}   ({status}; {blame})\n{test.output.strip()}")
        summary = "tests fail: " + "; ".join(
            f"{t.command} ({'timed out' if t.timed_out else f'exit {t.exit_code}'})" for t in failing)
        return AttemptResult("tests_failed", "\n".join(lines), answer, tests, "patch", None, summary)

    def _pixel_result(self, task: Task, number: int, answer: str) -> AttemptResult:
        self._stage(task, number, "validating pixel program")
        try:
            document = prompts.json_from_answer(answer)
            program = parse_program(document)
        except (prompts.NoJSON, ValidationError) as exc:
            log.info("attempt %d of %s: invalid pixel program: %s", number, task.id, exc)
            return AttemptResult("invalid_program", f"The pixel program is invalid: {exc}", answer,
                                 summary=f"invalid pixel program: {exc}")
        self._stage(task, number, "rendering")
        artifacts = self.settings.artifacts_dir
        program_path = artifacts / f"{task.id}.json"
        program_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        save_png(render(program), artifacts / f"{task.id}.png")
        if self.settings.gpu:
            self._gpu_check(task, program_path)
        return AttemptResult("passed", "", answer, [], "pixel", str(program_path))

    def _gpu_check(self, task: Task, program_path: Path) -> None:
        """Also execute on the GPU runner when asked; a missing GPU is noted, not a task failure."""
        from auto_gvpie.pixels.gpu import GPUError, render_gpu
        try:
            report = render_gpu(program_path, self.settings.artifacts_dir / f"{task.id}.gpu.png")
            log.info("GPU render of %s on %s: %s", task.id, report.get("adapter", {}).get("name"), report.get("timings_ms"))
        except GPUError as exc:
            log.warning("GPU render of %s skipped: %s", task.id, exc)

    # -- bookkeeping --------------------------------------------------------------------------

    def _run_tests(self, task: Task, worktree: Worktree, number: int, stage: str) -> list[CommandResult]:
        results = []
        for command in task.tests:
            self._stage(task, number, f"{stage}: {command}")
            results.append(run_command(command, worktree.path, task.test_timeout or self.settings.test_timeout,
                                       should_stop=self.should_stop))
        return results

    def _succeed(self, task: Task, number: int, worktree: Worktree | None, result: AttemptResult) -> Outcome:
        note = None
        if worktree is not None:
            patch = worktree.diff()
            patch_path = self.settings.artifacts_dir / f"{task.id}.patch"
            patch_path.write_text(patch, encoding="utf-8")
            applied = apply_to_checkout(self.settings.repo, patch, self.settings.apply, branch=f"gvpie/{task.id}")
            note = applied.message
            log.info("patch for %s: %s", task.id, note)
            self.memory.record_attempt(task.id, task.title, task.kind, number, "patch_saved", None, None, 0.0, [],
                                       "patch", str(patch_path), patch)
        return Outcome(task.id, "done", number, self._artifacts(task), None, note)

    def _record(self, task: Task, number: int, result: AttemptResult, llm_s: float, test_s: float, total_s: float) -> None:
        """Every attempt leaves a file under artifacts/, a row in the state store and a memory row."""
        record = {
            "task": task.id, "attempt": number, "outcome": result.outcome, "answer": result.answer,
            "feedback": result.feedback, "llm_seconds": round(llm_s, 3), "test_seconds": round(test_s, 3),
            "total_seconds": round(total_s, 3),
            "tests": [{"command": t.command, "exit_code": t.exit_code, "duration_s": round(t.duration_s, 3),
                       "timed_out": t.timed_out, "output": t.output} for t in result.tests]}
        path = self.settings.artifacts_dir / f"{task.id}.attempt-{number}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        self.store.record_attempt(task.id, number, result.outcome, result.feedback[:2000] or None, llm_s, test_s, total_s)
        failing = [t for t in result.tests if not t.passed]
        error_lines = _key_lines(result.feedback)
        self.memory.record_attempt(
            task.id, task.title, task.kind, number, result.outcome,
            failing[0].command if failing else (task.tests[0] if task.tests else None),
            failing[0].exit_code if failing else (0 if result.tests else None),
            total_s, error_lines, result.artifact_kind or "answer", result.artifact_path or str(path), result.answer)

    def _artifacts(self, task: Task) -> list[str]:
        names = sorted(p.name for p in self.settings.artifacts_dir.glob(f"{task.id}.*")
                       if not p.name.startswith(f"{task.id}.attempt-"))
        return [str(self.settings.artifacts_dir / n) for n in names]

    def _stage(self, task: Task, number: int, stage: str) -> None:
        self.store.heartbeat(task.id, self.owner, stage)
        self.progress(task.id, number, stage)


def _key_lines(feedback: str, limit: int = 8) -> list[str]:
    """The lines of a failure that say what went wrong (errors, assertions), for memory."""
    lines = [l.strip() for l in feedback.splitlines() if l.strip()]
    keys = [l for l in lines if any(w in l for w in ("Error", "error", "assert", "FAILED", "failed", "refused", "panicked"))]
    return (keys or lines)[:limit]


def run_pending(engine: Engine, tasks_file: Path, max_tasks: int | None = None) -> list[Outcome]:
    """Drain the inbox once: re-read it before each pick, so tasks appended meanwhile are seen."""
    outcomes: list[Outcome] = []
    tried: set[str] = set()
    while max_tasks is None or len(outcomes) < max_tasks:
        if engine.should_stop():
            break
        tasks = read_inbox(tasks_file)
        engine.store.sync(tasks)
        states = engine.store.all()
        for task in tasks:
            state = states.get(task.id)
            if state and state.status == "pending" and task.status in ("cancelled", "done"):
                # runnable() already honours the file's word; this records it in the store for --status.
                engine.store.mark(task.id, task.status, "set in the task file")
        ready, why = runnable(tasks, states)
        for task_id, reason in why.items():
            if reason.startswith("dependency "):
                engine.store.mark(task_id, "failed", f"not run: {reason}")
                outcomes.append(Outcome(task_id, "failed", 0, error=f"not run: {reason}"))
        ready = [t for t in ready if t.id not in tried]
        if not ready:
            break
        task = ready[0]
        tried.add(task.id)
        outcome = engine.run_task(task)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
