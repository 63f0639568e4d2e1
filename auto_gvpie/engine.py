"""One task, start to finish: claim, isolate, ask, apply, test, feed back, retry, record.

Read `Engine.run_task` top to bottom. What differs between kinds of task (where the
attempts work, what the model is asked, what an answer becomes) is behind `TaskKind`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from auto_gvpie import prompts
from auto_gvpie.config import Settings
from auto_gvpie.inbox import Inbox, Status, Task, runnable
from auto_gvpie.judge import Judge, Verdict, open_judge
from auto_gvpie.kinds import AttemptResult, Job, Stopped, TaskKind, kind_for
from auto_gvpie.llm import LLM, BadAnswer, LLMUnreachable, open_llm
from auto_gvpie.records import clip_middle, write_attempt_file
from auto_gvpie.runner import CommandResult, run_command
from auto_gvpie.sandbox import Sandbox, open_sandbox
from auto_gvpie.state import AttemptRecord, LeaseKeeper, StateStore
from auto_gvpie.workspace import WorkspaceError

if TYPE_CHECKING:  # the engine is handed a Memory; importing LanceDB is the caller's choice
    from auto_gvpie.memory import Memory

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, str], None]  # task id, attempt, stage text
TOKENS_STORED_S = 1.0  # how often the token count of a streaming answer is written to the state store
__all__ = ["Engine", "Outcome", "Stopped", "run_pending", "settle"]


@dataclass
class Outcome:
    task_id: str
    status: str  # done | failed | cancelled | pending (released)
    attempts: int
    artifacts: list[str] = field(default_factory=list)
    error: str | None = None
    note: str | None = None  # e.g. what happened to the patch in the user's checkout

    def as_json(self) -> dict:
        return {"id": self.task_id, "status": self.status, "attempts": self.attempts,
                "artifacts": self.artifacts, "error": self.error}


class Engine:
    def __init__(self, settings: Settings, store: StateStore, llm: LLM, memory: Memory, owner: str,
                 progress: ProgressFn | None = None, should_stop: Callable[[], bool] = lambda: False,
                 on_outcome: Callable[[Outcome], None] = lambda outcome: None, sandbox: Sandbox | None = None,
                 judge: Judge | None = None):
        self.settings = settings
        self.store = store
        self.llm = llm
        self.memory = memory
        self.owner = owner
        self.progress = progress or (lambda task_id, attempt, stage: None)
        self.should_stop = should_stop
        self.on_outcome = on_outcome  # told as each task ends, even if the drain is cut short later
        self.sandbox = sandbox or open_sandbox("off")
        self.judge = judge
        self.inbox = Inbox(settings.tasks_file)  # kept, so each re-read parses only what was appended
        self._cancelled = threading.Event()  # the running task's cancel request, set by its LeaseKeeper
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, settings: Settings, owner: str, *, progress: ProgressFn | None = None,
             should_stop: Callable[[], bool] = lambda: False,
             on_outcome: Callable[[Outcome], None] = lambda outcome: None,
             model_progress: Callable | None = None, memory: Memory | None = None) -> Engine:
        """The one place an engine is wired (for --once, each daemon worker and each queue job); `close()` it.
        `memory`: another store of memory than the home's LanceDB (a queue worker's, which the job carries)."""
        sandbox = open_sandbox(settings.sandbox, settings.sandbox_network)
        llm = open_llm(settings, progress=model_progress)
        store = StateStore(settings.state_dir)
        if memory is None:
            from auto_gvpie.memory import Memory  # LanceDB is heavy; --status never needs it
            memory = Memory(settings.home, enabled=settings.memory)
        return cls(settings, store, llm, memory, owner, progress, should_stop, on_outcome, sandbox,
                   open_judge(settings, llm))

    def close(self) -> None:
        self.memory.close()
        self.store.close()

    # -- the loop -----------------------------------------------------------------------------

    def run_task(self, task: Task) -> Outcome | None:
        """Run one pending task; None when another worker claimed it first."""
        if not self.store.claim(task.id, self.owner):
            return None
        log.info("picked %s (%s): %s", task.id, task.kind, task.title)
        kind = kind_for(task)
        job = Job(task, self.settings, self.llm, lambda number, stage: self._stage(task, number, stage),
                  lambda commands, number, stage: self._run(job, commands, number, stage))
        first = (self.store.get(task.id).attempts or 0) + 1
        self._cancelled = threading.Event()
        try:
            with LeaseKeeper(self.settings.state_dir, task.id, self.owner, cancelled=self._cancelled), \
                    kind.workspace(job):
                outcome = self._attempts(job, kind, first)
        except (LLMUnreachable, WorkspaceError, Stopped, KeyboardInterrupt) as exc:
            if not (isinstance(exc, Stopped) and self._cancelled.is_set()):
                # Not the task's fault: it waits for the server, the repository or the next start.
                self.store.release(task.id, self.owner, str(exc) if isinstance(exc, WorkspaceError) else None)
                log.info("released %s back to pending: %s", task.id, type(exc).__name__)
                raise
            # Cancelled by the user (--cancel, the dashboard); the worktree went with the block above.
            outcome = Outcome(task.id, Status.CANCELLED, self.store.get(task.id).attempts or 0,
                              self._artifacts(task), "cancelled by the user")
        except Exception as exc:
            # A bug must not leave the task claimed forever.
            log.exception("task %s crashed", task.id)
            outcome = Outcome(task.id, Status.FAILED, first - 1, error=f"internal error: {exc}")
        self.store.finish(task.id, self.owner, outcome.status, outcome.error, outcome.artifacts)
        self.memory.record_task(task.id, task.title, task.kind, task.description, outcome.status,
                                outcome.attempts, outcome.error)
        self.memory.flush()
        log.info("%s %s after %d attempt(s)%s", outcome.status, task.id, outcome.attempts,
                 f": {outcome.error}" if outcome.error else "")
        self.on_outcome(outcome)
        return outcome

    def _attempts(self, job: Job, kind: TaskKind, first: int) -> Outcome:
        task = job.task
        last_error = "no attempts left" if first > task.max_attempts else None
        kept: _Kept | None = None  # the best result that passed its checks but not the judge
        for number in range(first, task.max_attempts + 1):
            if self._stopping():
                raise Stopped()
            started = time.monotonic()
            recall = self.memory.recall(task.id, task.title, task.description, task.kind)
            prompt = kind.prompt(job, recall)
            self.store.annotate(task.id, prompt.warnings, kind.notes())
            result, llm_seconds = self._answer(job, kind, number, prompt)
            verdict = self._review(job, kind, number, result)
            if verdict is not None and not verdict.passes:
                if kept is None or verdict.score > kept.verdict.score:
                    kept = _Kept(number, result, verdict, kind.snapshot(job))
                result = replace(result, outcome="judge_rejected", feedback=verdict.feedback(),
                                 summary=f"passed its checks; {verdict.line()}")
            elif verdict is not None:
                result = replace(result, feedback=verdict.line())
            job.latest_tests = result.tests or job.latest_tests
            self._record(job, number, result, prompt, kind.details(), llm_seconds, time.monotonic() - started,
                         verdict)
            if result.outcome == "passed":
                return self._deliver(job, kind, number, result, verdict)
            last_error = result.summary or result.outcome
            job.history.append(prompts.Attempt(number, result.answer, result.outcome, result.feedback))
        if kept is not None:
            # No attempt satisfied the judge: the best of those that passed the real check is kept.
            kind.reset(job, kept.snapshot)
            return self._deliver(job, kind, kept.number, kept.result, kept.verdict,
                                 attempts=max(task.max_attempts, first - 1))
        return Outcome(task.id, Status.FAILED, max(task.max_attempts, first - 1), self._artifacts(task), last_error)

    def _review(self, job: Job, kind: TaskKind, number: int, result: AttemptResult) -> Verdict | None:
        """The judge's verdict on a result that passed its checks (None: no judge, or not passed)."""
        if self.judge is None or result.outcome != "passed":
            return None
        self._stage(job.task, number, f"judge reviewing ({self.judge.llm.model})")
        verdict = self.judge.review(job.task, kind.work(job, result))
        if verdict is not None:
            log.info("attempt %d of %s: %s", number, job.task.id, verdict.line())
        return verdict

    def _deliver(self, job: Job, kind: TaskKind, number: int, result: AttemptResult, verdict: Verdict | None,
                 attempts: int | None = None) -> Outcome:
        task = job.task
        delivery = kind.deliver(job, number, result)
        if delivery.record is not None:
            self.memory.remember(delivery.record)
        note = delivery.note
        if verdict is not None:
            line = verdict.line() if verdict.passes else (
                f"{verdict.line()} (below {verdict.threshold}: kept attempt {number}, the best that passed its checks)")
            self.store.score(task.id, verdict.score, line)
            if not verdict.passes:
                note = line + (f"; {note}" if note else "")
        return Outcome(task.id, Status.DONE, attempts or number, self._artifacts(task), None, note)

    def _answer(self, job: Job, kind: TaskKind, number: int, prompt: prompts.Prompt) -> tuple[AttemptResult, float]:
        """Ask for up to `samples` answers; each distinct one is tried on the same tree; the first that
        passes everything wins. Otherwise the most promising is kept (its tree is where the next
        attempt starts) and fed back: for a small model, independent samples checked by the tests
        are worth more than a longer chain of feedback."""
        samples = max(1, self.settings.samples)
        start = kind.snapshot(job) if samples > 1 else None
        best: tuple[AttemptResult, object] | None = None
        tried: set[str] = set()
        llm_seconds = 0.0
        answers = self._answers(job, kind, number, prompt, samples)
        try:
            for answer, bad, seconds in answers:
                llm_seconds += seconds
                if bad is None and " ".join(answer.split()) in tried:
                    continue  # the same answer again: its result is known
                tried.add(" ".join(answer.split()))
                result = bad or kind.result(job, number, answer, prompt)
                if result.outcome == "passed":
                    return result, llm_seconds
                if samples > 1:
                    if best is None or _promise(result) > _promise(best[0]):
                        best = (result, kind.snapshot(job))
                    kind.reset(job, start)
                else:
                    best = (result, None)
        finally:
            answers.close()  # answers still being asked for in parallel are not waited for
        if samples > 1 and best[1] is not None:
            kind.reset(job, best[1])
        return best[0], llm_seconds

    def _answers(self, job: Job, kind: TaskKind, number: int, prompt: prompts.Prompt,
                 samples: int) -> Iterator[tuple[str, AttemptResult | None, float]]:
        """The samples' answers in order. A server with several slots (`llm_parallel`) is asked for
        them at once, so the tests of one run while the next is generated; the bundled model is
        asked one after another, reusing the prompt's evaluation. The seconds are the time spent
        waiting for each answer."""
        # Only the first answer of a task is the model's most likely one; a retry samples (another seed,
        # some temperature), because a small model shown its refused answer tends to send it again.
        first = (number - 1) * samples
        parallel = min(samples, self.settings.llm_parallel) if self.settings.llm == "http" else 1
        if parallel <= 1:
            for sample in range(first, first + samples):
                yield self._ask(job, kind, number, prompt, sample)
            return
        self._stage(job.task, number, f"asking {self.llm.model} for {samples} answers, {parallel} at a time")
        pool = ThreadPoolExecutor(parallel, thread_name_prefix=f"sample-{job.task.id}")
        try:
            pending = [pool.submit(self._ask, job, kind, number, prompt, sample, False)
                       for sample in range(first, first + samples)]
            for future in pending:
                waited = time.monotonic()
                answer, bad, _ = future.result()
                yield answer, bad, time.monotonic() - waited
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _ask(self, job: Job, kind: TaskKind, number: int, prompt: prompts.Prompt,
             sample: int, report: bool = True) -> tuple[str, AttemptResult | None, float]:
        """One answer (text, None) or an unusable one (its partial text, a bad_answer result).
        `report`: show progress (only the engine's own thread touches the state store)."""
        task = job.task
        tokens = 0
        stored = time.monotonic()

        def on_token(_: str) -> None:
            nonlocal tokens, stored
            if self._cancelled.is_set():
                raise Stopped()  # ends the stream; the connection is closed on the way out
            tokens += 1
            if report and tokens % 8 == 1:
                self.progress(task.id, number, f"LLM answering ({tokens} tokens)")
                if time.monotonic() - stored >= TOKENS_STORED_S:
                    # The dashboard reads the count from the store; once a second is plenty.
                    stored = time.monotonic()
                    self.store.heartbeat(task.id, self.owner, f"LLM answering ({tokens} tokens)")

        if report:
            self._stage(task, number, f"asking {self.llm.model}" + (f" (sample {sample + 1})" if sample else ""))
        started = time.monotonic()
        try:
            completion = self.llm.complete(prompt.messages, json_schema=kind.schema,
                                           max_tokens=prompt.max_tokens or self.settings.max_answer_tokens,
                                           on_token=on_token, sample=sample)
        except BadAnswer as exc:
            log.info("attempt %d of %s: unusable answer (%s)", number, task.id, exc.reason)
            feedback = f"Your answer could not be used ({exc.reason}): {exc}"
            if exc.reason == "truncated":
                feedback += "\nThe answer was cut off: answer shorter (only the changed parts)."
            return exc.partial_text, AttemptResult("bad_answer", feedback, exc.partial_text,
                                                   summary=f"unusable LLM answer: {exc}"), time.monotonic() - started
        seconds = time.monotonic() - started
        log.info("attempt %d of %s: LLM answered in %d ms", number, task.id, seconds * 1000)
        return completion.text, None, seconds

    # -- bookkeeping --------------------------------------------------------------------------

    def _run(self, job: Job, commands: Sequence[str], number: int, stage: str) -> list[CommandResult]:
        """The user's commands (tests, setup) in the task's worktree: sandboxed, timed, stoppable."""
        results = []
        for command in commands:
            self._stage(job.task, number, f"{stage}: {command}")
            results.append(run_command(command, job.worktree.path, job.task.test_timeout or self.settings.test_timeout,
                                       should_stop=self._stopping, sandbox=self.sandbox))
        return results

    def _record(self, job: Job, number: int, result: AttemptResult, prompt: prompts.Prompt, details: dict,
                llm_s: float, total_s: float, verdict: Verdict | None) -> None:
        """Every attempt leaves a file under artifacts/, a row in the state store and a memory row."""
        task = job.task
        path = self.settings.artifacts_dir / f"{task.id}.attempt-{number}.json"
        failing = [t for t in result.tests if not t.passed]
        record = AttemptRecord(
            task, number, result.outcome, result.feedback, result.answer,
            test_command=failing[0].command if failing else (task.tests[0] if task.tests else None),
            exit_code=failing[0].exit_code if failing else (0 if result.tests else None),
            error_lines=tuple(_key_lines(result.feedback)), llm_seconds=llm_s,
            test_seconds=sum(t.duration_s for t in result.tests), total_seconds=total_s,
            artifact_kind=result.artifact_kind or "answer", artifact_path=result.artifact_path or str(path))
        judged = {"judge": {"score": verdict.score, "reasons": list(verdict.reasons)}} if verdict else {}
        write_attempt_file(path, record, result.tests, {"warnings": prompt.warnings, "excerpts": prompt.excerpts,
                                                        "prompt_tokens": prompt.tokens, "diff": clip_middle(result.diff),
                                                        **judged, **details})
        self.store.record_attempt(record)
        self.memory.remember(record)

    def _artifacts(self, task: Task) -> list[str]:
        names = sorted(p.name for p in self.settings.artifacts_dir.glob(f"{task.id}.*")
                       if not p.name.startswith(f"{task.id}.attempt-"))
        return [str(self.settings.artifacts_dir / n) for n in names]

    def _stage(self, task: Task, number: int, stage: str) -> None:
        if self._cancelled.is_set():
            raise Stopped()  # between steps: a cancelled task goes no further
        self.store.heartbeat(task.id, self.owner, stage)
        self.progress(task.id, number, stage)

    def _stopping(self) -> bool:
        """A stop (the process is asked to end) or a cancel of the running task."""
        return self.should_stop() or self._cancelled.is_set()


@dataclass
class _Kept:
    number: int
    result: AttemptResult
    verdict: Verdict
    snapshot: object  # the workspace as that attempt left it (kind.snapshot)


def _promise(result: AttemptResult) -> tuple[int, int]:
    """How close a failed candidate came: tests ran (the more passing, the better) over a refused or
    unusable answer."""
    applied = result.outcome == "tests_failed"
    return (1 if applied else 0, sum(t.passed for t in result.tests))


def _key_lines(feedback: str, limit: int = 8) -> list[str]:
    """The lines of a failure that say what went wrong (errors, assertions), for memory."""
    lines = [l.strip() for l in feedback.splitlines() if l.strip()]
    keys = [l for l in lines if any(w in l for w in ("Error", "error", "assert", "FAILED", "failed", "refused", "panicked"))]
    return (keys or lines)[:limit]


def settle(store: StateStore, tasks: list[Task]) -> tuple[list[Task], list[Outcome]]:
    """The tasks ready to run, best first, after recording what needs no run: the file's word on a
    pending task (cancelled, done) and the tasks a failed dependency rules out (their outcomes)."""
    status = store.statuses(tasks)
    for task in tasks:
        if status[task.id] in (Status.CANCELLED, Status.DONE) and task.status == status[task.id]:
            # The file's word on a pending task; recorded in the store for --status.
            store.mark(task.id, task.status, "set in the task file")
    ready, why = runnable(tasks, status)
    settled = []
    for task_id, reason in why.items():
        if reason.startswith("dependency "):
            store.mark(task_id, Status.FAILED, f"not run: {reason}")
            settled.append(Outcome(task_id, Status.FAILED, 0, error=f"not run: {reason}"))
    return ready, settled


def run_pending(engine: Engine, max_tasks: int | None = None) -> list[Outcome]:
    """Drain the inbox once: re-read it before each pick (only what was appended is parsed),
    so tasks appended meanwhile are seen."""
    outcomes: list[Outcome] = []
    tried: set[str] = set()
    while max_tasks is None or len(outcomes) < max_tasks:
        if engine.should_stop():
            break
        ready, settled = settle(engine.store, engine.store.sync(engine.inbox.read()))
        outcomes.extend(settled)
        ready = [t for t in ready if t.id not in tried]
        if not ready:
            break
        task = ready[0]
        tried.add(task.id)
        outcome = engine.run_task(task)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
