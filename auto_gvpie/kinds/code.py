"""Code tasks: an edit applied in a git worktree, checked by the task's own test commands.

No false passes: a result is accepted only when the task's commands pass, the whole test files
they select pass too (`testsel.widen`; tests already failing there before the change are not
blamed on it), and the answer edited no test file the task does not list in `inputs`.

The worktree must be able to run the tests: the settings `copy_ignored` (untracked files brought
from the user's checkout) and `setup` (a command run in the worktree first) make it so, and a
baseline that shows the tests cannot even start there (`testsel.cannot_start`) stops the queue
with a plain message (a `WorkspaceError`: the task stays pending) instead of burning attempts.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from auto_gvpie import prompts
from auto_gvpie.codeindex import CodeIndex, CodeIndexError
from auto_gvpie.config import CONFIG_FILE, Settings
from auto_gvpie.edits import EditRefused, apply_answer
from auto_gvpie.kinds import AttemptResult, Delivery, Job, Stopped
from auto_gvpie.localize import Ranking, localize
from auto_gvpie.paths import protected_by
from auto_gvpie.runner import CommandResult
from auto_gvpie.state import AttemptRecord
from auto_gvpie.testsel import SETTINGS_HINT, cannot_start, failing_tests, is_test_path, test_files, widen
from auto_gvpie.workspace import Worktree, WorkspaceError, apply_to_checkout

log = logging.getLogger(__name__)

LOCATED_FILES = 2  # files shown when the task names none: an 8k context holds about two focused files


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

    def __init__(self) -> None:
        self.widened: list[str] = []  # the task's commands widened to whole test files (those that differ)
        self.widened_before: dict[str, CommandResult] = {}  # those, on the untouched tree
        self.judges: set[str] = set()  # files the task's commands name as tests
        self.ranking: Ranking | None = None  # where the fault probably is, and why (once per task)

    @contextmanager
    def workspace(self, job: Job) -> Iterator[None]:
        settings = job.settings
        with Worktree(settings.repo, settings.state_dir, job.task.id, settings.copy_ignored,
                      protected=service_paths(settings)) as worktree:
            job.worktree = worktree
            if settings.setup:
                self._setup(job)
            if settings.setup or settings.copy_ignored:
                worktree.settle()  # what setup built or was copied is not part of the patch
            job.baseline = job.latest_tests = job.run(job.task.tests, 0, "baseline tests")
            self._check_baseline(job)
            self.judges = {rel for command in job.task.tests for rel in test_files(command, worktree.path)}
            self.widened = list(dict.fromkeys(w for c in job.task.tests if (w := widen(c, worktree.path))))
            if self.widened:
                before = job.run(self.widened, 0, "baseline tests (whole files)")
                self.widened_before = {r.command: r for r in before}
            yield

    def _setup(self, job: Job) -> None:
        """The user's setup command, run in the fresh worktree like a test command (same sandbox and
        timeout). It runs before the model has written anything, so a failure is the environment's:
        the queue stops and the task stays pending."""
        command = job.settings.setup
        (result,) = job.run([command], 0, "setup")
        if result.stopped:
            raise Stopped()
        if not result.passed:
            status = "timed out" if result.timed_out else f"exit code {result.exit_code}"
            tail = "\n".join(result.output.strip().splitlines()[-15:])
            message = (f"the setup command failed in a fresh worktree: `{command}` ({status})"
                       + (f":\n{tail}" if tail else "") + "\nFix it, or the setup setting in gvpie.toml; "
                       "the tasks stay pending.")
            raise WorkspaceError(message)

    def _check_baseline(self, job: Job) -> None:
        """Tests that cannot even start in the worktree would blame every attempt on "already
        failing": stop instead, saying which command, the error line and the fix."""
        failed = [t for t in job.baseline if not t.passed and not t.stopped and not t.timed_out]
        if not failed:
            return
        tracked = job.worktree.tracked()
        for test in failed:
            blocker = cannot_start(test.command, test.exit_code, test.output, worktree=job.worktree.path,
                                   checkout=job.settings.repo, tracked=tracked)
            if blocker is not None:
                message = (f"the tests cannot run in a fresh worktree: `{test.command}` → {blocker.line}\n"
                           f"{blocker.hint}\n{SETTINGS_HINT}")
                log.info("%s: %s", job.task.id, message.replace("\n", " "))
                raise WorkspaceError(message)

    def prompt(self, job: Job, recall: str) -> prompts.Prompt:
        failing = "\n".join(f"$ {t.command}   (exit code {t.exit_code})\n{t.output.strip()}"
                            for t in job.latest_tests if not t.passed)
        settings, task = job.settings, job.task
        if self.ranking is None:
            # From the untouched tree's failures: later attempts change the tree, not where the bug is.
            index, why_not = _code_index(job) if not task.inputs and settings.code_index else (None, None)
            self.ranking = localize(job.worktree.path, task.title, task.description, task.tests, failing, index,
                                    task.inputs, protected=service_paths(settings))
            if why_not:
                self.ranking.notes.append(why_not)
            log.info("localisation for %s: %s", task.id, self.ranking.summary())
        prompt = prompts.code_prompt(task, job.worktree.path, recall, job.history, settings.edit_format,
                                     job.llm.context_window, settings.max_answer_tokens, job.llm.count_tokens,
                                     failing, protected=service_paths(settings), shown=self._shown(task),
                                     focus={f.path: f.symbols for f in self.ranking.files})
        if prompt.left_out:
            log.info("prompt for %s shortened: %s", task.id, "; ".join(prompt.left_out))
        return prompt

    def _shown(self, task) -> list[str]:
        """The task's inputs; without any, the files localisation ranks first: the best one, and the
        next while it scores at least half as well (a fix often spans a caller and a callee)."""
        if task.inputs:
            return list(task.inputs)
        found = self.ranking.files[:LOCATED_FILES]
        return [f.path for f in found if f.score >= found[0].score / 2]

    def snapshot(self, job: Job) -> str:
        return job.worktree.snapshot()

    def reset(self, job: Job, snapshot: object) -> None:
        job.worktree.reset_to(str(snapshot))

    def work(self, job: Job, result: AttemptResult) -> str:
        """For the judge: the change as one patch, and the checks it passed."""
        passed = "\n".join(f"- `{t.command}` passed" for t in result.tests if t.passed)
        return f"The patch (against the repository as it was):\n{job.worktree.diff()}\nChecks:\n{passed}"

    def notes(self) -> list[str]:
        """For --status: which files were chosen and why."""
        return [f"files: {self.ranking.summary()}"] if self.ranking and self.ranking.files else []

    def details(self) -> dict:
        """For the attempt file: the whole ranking with its reasons."""
        return {"localisation": self.ranking.to_json()} if self.ranking else {}

    def result(self, job: Job, number: int, answer: str, prompt: prompts.Prompt) -> AttemptResult:
        task = job.task
        job.stage(number, "applying edit")
        before = job.worktree.snapshot()  # the tree before this answer, for a refusal after applying
        try:
            applied = apply_answer(job.worktree.path, answer, prompt.edit_format or "auto", task.inputs,
                                   protected=service_paths(job.settings))
        except EditRefused as exc:
            log.info("attempt %d of %s: edit refused: %s", number, task.id, str(exc).splitlines()[0])
            return AttemptResult("refused", f"Your edit was refused, nothing was changed:\n{exc}", answer,
                                 summary=f"edit refused: {str(exc).strip().splitlines()[0]}")
        judges = self._test_files_touched(task.inputs, applied.files)
        if judges:
            job.worktree.reset_to(before)
            log.info("attempt %d of %s: edit refused: it changes test file(s) %s", number, task.id, ", ".join(judges))
            reasons = "\n".join(f"- {rel} is a test file the task does not list in inputs; the tests are the judge, "
                                 f"change the code under test instead" for rel in judges)
            return AttemptResult("refused", f"Your edit was refused, nothing was changed:\n{reasons}", answer,
                                 summary=f"edit refused: {judges[0]} is a test file the task does not list in inputs")
        log.info("attempt %d of %s: edit applied to %s", number, task.id, ", ".join(applied.files))
        # What this answer changed, kept with the attempt (the dashboard shows it); the task's
        # combined patch is only written when it passes.
        diff = job.worktree.diff(since=before)
        return replace(self._tested(job, number, answer, applied.files), diff=diff)

    def _tested(self, job: Job, number: int, answer: str, files: Sequence[str]) -> AttemptResult:
        """The applied edit judged by the task's tests (then by the whole test files they select)."""
        task = job.task
        tests = job.run(job.task.tests, number, "running tests")
        failing = [t for t in tests if not t.passed]
        log.info("attempt %d of %s: tests %s", number, task.id, "fail" if failing else "pass")
        if not failing:
            return self._whole_files(job, number, answer, files, tests)
        if any(t.stopped for t in failing):
            raise Stopped()
        before = {t.command: t for t in job.baseline}
        lines = [f"Your edit applied to {', '.join(files)}, but tests fail:"]
        for test in failing:
            was = before.get(test.command)
            if was is not None and was.passed:
                blame = "it passed before your change, so your change broke it"
            elif was is not None and was.exit_code != test.exit_code:  # e.g. the tests cannot even load now
                blame = f"it failed before your change with exit code {was.exit_code}; now it fails differently"
            else:
                blame = "it still fails as it did before your change"
            status = "timed out" if test.timed_out else f"exit code {test.exit_code}"
            lines.append(f"$ {test.command}   ({status}; {blame})\n{test.output.strip()}")
        summary = "tests fail: " + "; ".join(
            f"{t.command} ({'timed out' if t.timed_out else f'exit {t.exit_code}'})" for t in failing)
        return AttemptResult("tests_failed", "\n".join(lines), answer, tests, "patch", None, summary)

    def _test_files_touched(self, inputs: Sequence[str], files: Sequence[str]) -> list[str]:
        """The changed files that judge the answer (test files by convention, or named by the task's
        commands) and that the task does not list in `inputs`."""
        return [rel for rel in files if (is_test_path(rel) or rel in self.judges) and protected_by(rel, inputs) is None]

    def _whole_files(self, job: Job, number: int, answer: str, files: Sequence[str],
                     tests: list[CommandResult]) -> AttemptResult:
        """The selected tests pass: now the whole files they select. A test there that fails now but
        did not fail before the change (by name where the runner says names, else by command) means
        the change broke it; one that already failed on the untouched tree is not blamed on it."""
        if not self.widened:
            return AttemptResult("passed", "", answer, tests, "patch", None)
        wide = job.run(self.widened, number, "running whole test files")
        broken: list[tuple[CommandResult, list[str]]] = []
        for result in wide:
            if result.passed:
                continue
            if result.stopped:
                raise Stopped()
            names = failing_tests(result.output)
            before = self.widened_before.get(result.command)
            if before is None or before.passed:
                broken.append((result, names))
                continue
            already = set(failing_tests(before.output))
            fresh = [name for name in names if name not in already]
            if fresh:
                broken.append((result, fresh))
            else:
                log.info("attempt %d of %s: %s fails as it did before the change; not blamed on it",
                         number, job.task.id, result.command)
        if not broken:
            return AttemptResult("passed", "", answer, tests + [r for r in wide if r.passed], "patch", None)
        names = [name for _, found in broken for name in found]
        what = ", ".join(names) if names else ", ".join(f"`{r.command}`" for r, _ in broken)
        lines = [f"Your edit applied to {', '.join(files)}. Your change passes the selected test but breaks other "
                 f"tests in the same file: {what}. They passed before your change; make them pass too."]
        for result, _ in broken:
            status = "timed out" if result.timed_out else f"exit code {result.exit_code}"
            lines.append(f"$ {result.command}   ({status}; the whole file)\n{result.output.strip()}")
        log.info("attempt %d of %s: breaks other tests in the same file: %s", number, job.task.id, what)
        return AttemptResult("tests_failed", "\n".join(lines), answer, tests + wide, "patch", None,
                             f"breaks other tests in the same file: {what}")

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


def _code_index(job: Job) -> tuple[CodeIndex | None, str | None]:
    """The code index (LanceDB table `code`) brought up to the checkout's HEAD, which is the
    worktree's base, or why it cannot be used. Only for a task that names no file: the first index
    of a big repository takes minutes (later ones only re-read changed files), and with inputs it
    would only break ties."""
    index = CodeIndex(job.settings.home, job.settings.repo)
    try:
        index.update(progress=lambda done, total: job.stage(1, f"indexing the repository: {done}/{total} files"))
    except CodeIndexError as exc:  # localisation goes on from the tests and the names in the task
        log.warning("%s: no code index: %s", job.task.id, exc)
        return None, f"no code index: {exc}"
    return index, None
