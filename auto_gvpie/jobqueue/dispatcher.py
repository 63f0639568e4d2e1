"""`auto-gvpie --daemon --queue URL`: the daemon, with the attempts run by workers on a queue.

It is the `Daemon` (the home's lock, the inbox watch, signals, housekeeping) with its one worker
thread replaced by a dispatch loop: each turn takes the results that came back (also those that
arrived while it was down) and enqueues each runnable task. It alone writes the home: the state
store, LanceDB memory, artifacts/ and the user's checkout (a patch goes in through the same
`apply_to_checkout` as a local task's).

A dispatched task is claimed in the state store by "queue:<job id>". Those leases outlive the
dispatcher: a restarted one adopts them (`StateStore.adopt`) before housekeeping, so they are
not taken for a dead process's, and waits on their jobs. A stop ends enqueuing; jobs already on
the queue go on running and their results are taken at the next start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from auto_gvpie.config import Settings
from auto_gvpie.daemon import Daemon
from auto_gvpie.engine import Outcome, settle
from auto_gvpie.inbox import FINISHED, Inbox, InboxError, Status, Task
from auto_gvpie.jobqueue import QUEUE_FILE, broker
from auto_gvpie.jobqueue.job import (OWNER_PREFIX, TASK_SETTINGS, JobResult, JobSpec, job_id as make_job_id,
                                  owner_of, record_from_json, task_to_json)
from auto_gvpie.jobqueue.ledger import APPLIED, APPLYING, QUEUED, STALE, Dispatch, Ledger
from auto_gvpie.state import AttemptRecord, StateStore
from auto_gvpie.workspace import WorkspaceError, apply_to_checkout, check_repo, git

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often results are looked for (one pipelined round trip for all jobs in flight)
RESULT_TTL_S = 30 * 24 * 3600  # a result waits this long for a dispatcher that is down
RETRIES = 2  # a job whose worker died is handed to another worker this many times, same round
MAX_ROUNDS = 3  # jobs that failed on workers this many times: the task fails
RUN_JOB = "auto_gvpie.jobqueue.worker.run_job"


class Dispatcher(Daemon):
    def __init__(self, settings: Settings, url: str, **kwargs):
        super().__init__(dataclasses.replace(settings, workers=1), **kwargs)
        self.url = url
        self._cooldown: dict[str, float] = {}  # task id -> not dispatched again before (monotonic)
        self._published: dict[str, str] = {}  # base commit -> the git URL workers fetch it from
        self._redis_down = False
        self._cleaned_at = 0.0
        self._stages: dict[str, str] = {}  # task id -> the stage last written for --status
        self._adopted = False

    # -- the supervisor's part ----------------------------------------------------------------

    def _housekeeping(self, store: StateStore) -> None:
        """At the first housekeeping (before any dispatching), take back the tasks this home handed
        to workers before stale leases are recovered; a claim without a ledger row (a state.db from
        a crash of another order of steps) goes back to pending."""
        if not self._adopted:
            self._adopt(store)
            self._adopted = True
        super()._housekeeping(store)

    def _adopt(self, store: StateStore) -> None:
        ledger = Ledger(self.settings.state_dir)
        try:
            open_jobs = {d.job_id for d in ledger.open()}
            for task_id, owner in store.adopt(OWNER_PREFIX):
                if owner[len(OWNER_PREFIX):] not in open_jobs:
                    store.release(task_id, owner)
                    log.warning("released %s: its dispatch was never recorded", task_id)
        finally:
            ledger.close()

    # -- the dispatch loop (the one worker thread) ----------------------------------------------

    def _serve(self, owner: str) -> None:
        from auto_gvpie.memory import Memory

        settings = self.settings
        conn = broker.connect(self.url)
        broker.ping(conn, self.url)
        broker.publish_protocol(conn)
        queue = broker.work_queue(conn)
        store = StateStore(settings.state_dir)
        ledger = Ledger(settings.state_dir)
        memory = Memory(settings.home, enabled=settings.memory)
        inbox = Inbox(settings.tasks_file)
        (settings.state_dir / QUEUE_FILE).write_text(json.dumps({"url": self.url}) + "\n")
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        turn = _Turn(self, conn, queue, store, ledger, memory, inbox)
        try:
            with self._cond:
                self._ready += 1
                self._cond.notify_all()
            log.info("dispatching to %s (queue %s)", self.url, queue.name)
            seen = None  # the generation of work (file change, re-scan) last dispatched
            while not self._stopping.is_set():
                try:
                    generation = self._generation
                    # The inbox is read when it changed, at a re-scan, when a result settled a task
                    # (a dependent may be ready) or a task's wait after a release is over.
                    settled = turn.collect()
                    due = any(t <= time.monotonic() for t in self._cooldown.values())
                    if not self._stopping.is_set() and (settled or due or generation != seen):
                        turn.dispatch()
                        seen = generation
                    if self._redis_down:
                        log.info("Redis reachable again")
                        self._redis_down = False
                except broker.REDIS_DOWN as exc:
                    if not self._redis_down:
                        log.warning("Redis unreachable (%s); retrying", exc)
                    self._redis_down = True
                except InboxError as exc:
                    if str(exc) != self._inbox_error:
                        log.error("cannot read the task file, waiting for it to change: %s", exc)
                    self._inbox_error = str(exc)
                except Exception:  # a bug must not stop the dispatching of every other task
                    log.exception("dispatcher error; going on in %g s", self.settings.interval)
                    self._stopping.wait(self.settings.interval)
                with self._cond:
                    if self._generation == seen and not self._stopping.is_set():
                        self._cond.wait(POLL_S)
            waiting = len(ledger.open())
            if waiting:
                log.info("stopped enqueuing; %d job(s) still on the queue: their results are taken at the next start",
                         waiting)
        finally:
            memory.close()
            ledger.close()
            store.close()


class _Turn:
    """One dispatcher's connections and what a turn of its loop does with them."""

    def __init__(self, dispatcher: Dispatcher, conn, queue, store: StateStore, ledger: Ledger, memory, inbox: Inbox):
        self.d = dispatcher
        self.settings = dispatcher.settings
        self.conn, self.queue, self.store, self.ledger, self.memory, self.inbox = conn, queue, store, ledger, memory, inbox

    # -- results --------------------------------------------------------------------------------

    def collect(self) -> bool:
        """Take the results that came back; True when a task was settled or handed back."""
        from rq.job import Job, JobStatus

        now = time.monotonic()
        if now - self.d._cleaned_at >= self.settings.queue_heartbeat:
            # A dead worker's job is found here (its hold in the started registry expired) and
            # requeued with a retry left; any worker's maintenance does it too, less often.
            self.queue.started_job_registry.cleanup()
            self.d._cleaned_at = now
        rows = self.ledger.open()
        if not rows:
            return False
        settled = False
        jobs = Job.fetch_many([r.job_id for r in rows], connection=self.conn, serializer=self.queue.serializer)
        for row, job in zip(rows, jobs):
            if job is None:
                state = self.store.get(row.task_id)
                if row.state == QUEUED and state is not None and state.lease_owner == owner_of(row.job_id):
                    log.warning("job %s of %s is gone from Redis; enqueued again", row.job_id, row.task_id)
                    self._enqueue(row.spec)
                elif state is not None and state.lease_owner == owner_of(row.job_id):
                    # Applied in part before a crash, and the result has expired since: run it again.
                    log.warning("result of %s for %s is gone from Redis; the task goes back to pending",
                                row.job_id, row.task_id)
                    self.store.release(row.task_id, owner_of(row.job_id), "its result was lost")
                    self.ledger.set(row.job_id, STALE)
                    settled = True
                else:
                    self.ledger.set(row.job_id, STALE)
                continue
            status = job.get_status(refresh=False)
            if row.state == QUEUED and status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED,
                                                  JobStatus.SCHEDULED) and self._cancel(row, job, status):
                settled = True
                continue
            if status == JobStatus.STARTED and row.state == QUEUED:
                self._running(row, job.worker_name)
            if status == JobStatus.FINISHED:
                self._apply(row, JobResult.from_json(job.return_value()))
                _forget(job)
                settled = True
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                result = job.latest_result()
                why = (result.exc_string or "").strip().splitlines()[-1:] if result else []
                self._job_failed(row, why[0] if why else str(status))
                _forget(job)
                settled = True
        return settled

    def _cancel(self, row: Dispatch, job, status) -> bool:
        """A cancel asked for (--cancel, the dashboard) of a task on the queue: its job is stopped
        on its worker (or taken off the queue) and the task ends cancelled; a result that still
        comes finds the ledger row taken."""
        from rq.command import send_stop_job_command
        from rq.job import JobStatus

        owner = owner_of(row.job_id)
        if not self.store.cancel_requested(row.task_id, owner) or not self.ledger.take(row.job_id, "?"):
            return False
        try:
            if status == JobStatus.STARTED:
                send_stop_job_command(self.conn, row.job_id)
            else:
                job.cancel()
        except Exception as exc:  # the job ended meanwhile: the task is cancelled all the same
            log.info("job %s of %s not stopped: %s", row.job_id, row.task_id, exc)
        state = self.store.get(row.task_id)
        self.store.finish(row.task_id, owner, Status.CANCELLED, "cancelled by the user", [])
        self.ledger.set(row.job_id, APPLIED)
        log.info("cancelled %s (job %s)", row.task_id, row.job_id)
        self.d._report(Outcome(row.task_id, Status.CANCELLED, state.attempts if state else 0, [],
                               "cancelled by the user"))
        return True

    def _running(self, row: Dispatch, worker: str | None) -> None:
        """What --status shows for a dispatched task: which worker runs it (written when it changes)."""
        stage = f"running on {worker}" if worker else "running on a worker"
        if self.d._stages.get(row.task_id) != stage:
            self.store.heartbeat(row.task_id, owner_of(row.job_id), stage)
            self.d._stages[row.task_id] = stage

    def _apply(self, row: Dispatch, result: JobResult) -> None:
        """A job's result into the home, once: the ledger row leaves `queued` first, so a second
        result for the same job (it ran twice) finds nothing to do."""
        settings, store = self.settings, self.store
        owner = owner_of(row.job_id)
        if row.state == QUEUED and not self.ledger.take(row.job_id, result.worker, result.started_at):
            return
        state = store.get(row.task_id)
        if state is None or state.status != Status.IN_PROGRESS or state.lease_owner != owner:
            log.warning("result of %s for %s ignored: the task was taken back meanwhile", row.job_id, row.task_id)
            self.ledger.set(row.job_id, STALE)
            return
        resumed = row.state == APPLYING
        task = _task(row)
        files = result.files()
        for name, data in files.items():
            if "/" in name or "\\" in name or not name.startswith(f"{task.id}."):
                log.warning("result of %s: file %r refused (not this task's artifact)", row.job_id, name)
                continue
            (settings.artifacts_dir / name).write_bytes(data)

        def here(path: str | None) -> str | None:
            return path.replace(result.artifacts_dir, str(settings.artifacts_dir), 1) if path else path

        if not resumed:  # a resumed apply may have recorded these before the crash: never twice
            for run in result.runs:
                store.record_attempt(AttemptRecord(task, run["attempt"], run["outcome"], run.get("detail") or "",
                                                   llm_seconds=run.get("llm_seconds") or 0.0,
                                                   test_seconds=run.get("test_seconds") or 0.0,
                                                   total_seconds=run.get("total_seconds") or 0.0))
            for data in result.memory:
                record = record_from_json(task, data)
                self.memory.remember(dataclasses.replace(record, artifact_path=here(record.artifact_path)))
        note = None
        patch = files.get(f"{task.id}.patch")
        if result.status == Status.DONE and patch is not None:
            text = patch.decode("utf-8")
            if resumed and git(settings.repo, "apply", "--check", "--reverse", "-", check=False, input=text).returncode == 0:
                note = "applied before the dispatcher restarted"
            else:
                note = apply_to_checkout(settings.repo, text, settings.apply, branch=f"gvpie/{task.id}").message
            log.info("patch for %s: %s", task.id, note)
        artifacts = sorted(str(settings.artifacts_dir / n) for n in files
                           if n.startswith(f"{task.id}.") and not n.startswith(f"{task.id}.attempt-"))
        if result.score is not None:
            store.score(task.id, result.score, result.verdict or "")
        if result.status in FINISHED:
            store.finish(task.id, owner, result.status, result.error, artifacts)
            self.memory.record_task(task.id, task.title, task.kind, task.description, result.status,
                                    result.attempts, result.error)
        else:
            store.release(task.id, owner, result.error)
            # A worker's LLM that stays down is asked less and less often (up to 16 intervals apart).
            backoff = min(2 ** max(0, self.ledger.rounds(task.id) - 1), 16)
            self.d._cooldown[task.id] = time.monotonic() + self.settings.interval * backoff
        self.memory.flush()
        self.ledger.set(row.job_id, APPLIED)
        picked = f", picked up after {result.started_at - row.created:.2f} s" if result.started_at else ""
        log.info("%s %s after %d attempt(s) on %s (job %s%s)%s", result.status, task.id, result.attempts,
                 result.worker, row.job_id, picked, f": {result.error}" if result.error else "")
        if result.status in FINISHED:
            self.d._report(Outcome(task.id, result.status, result.attempts, artifacts, result.error, note))

    def _job_failed(self, row: Dispatch, why: str) -> None:
        """The job itself failed (its workers died every time, it ran past the job timeout, a bug):
        the task goes back to pending for another round, or fails after MAX_ROUNDS."""
        if not self.ledger.take(row.job_id, "?"):
            return
        owner = owner_of(row.job_id)
        state = self.store.get(row.task_id)
        if state is None or state.lease_owner != owner:
            self.ledger.set(row.job_id, STALE)
            return
        if self.ledger.rounds(row.task_id) >= MAX_ROUNDS:
            error = f"the job failed on workers {MAX_ROUNDS} times; last: {why}"
            self.store.finish(row.task_id, owner, Status.FAILED, error, [])
            self.d._report(Outcome(row.task_id, Status.FAILED, state.attempts, [], error))
        else:
            self.store.release(row.task_id, owner, f"the job failed on a worker: {why}")
            self.d._cooldown[row.task_id] = time.monotonic() + self.settings.interval
        log.warning("job %s of %s failed: %s", row.job_id, row.task_id, why)
        self.ledger.set(row.job_id, APPLIED)

    # -- dispatching ----------------------------------------------------------------------------

    def dispatch(self) -> None:
        ready, settled = settle(self.store, self.store.sync(self.inbox.read()))
        self.d._inbox_error = None
        for outcome in settled:
            self.d._report(outcome)
        now = time.monotonic()
        for task_id in [t for t, until in self.d._cooldown.items() if until <= now]:
            del self.d._cooldown[task_id]
        ready = [t for t in ready if t.id not in self.d._cooldown]
        if not ready:
            return
        try:
            base = check_repo(self.settings.repo)
            git_url = self._publish(base)
        except WorkspaceError as exc:
            log.error("cannot dispatch: %s; tasks stay pending", exc)
            for task in ready:
                self.d._cooldown[task.id] = now + self.settings.interval
            return
        for task in ready:
            if self.d._stopping.is_set():
                return
            round_ = self.ledger.next_round(task.id)
            job = make_job_id(task.id, round_)
            state = self.store.get(task.id)
            spec = JobSpec(job, round_, task_to_json(task), base, git_url,
                           self.memory.recall(task.id, task.title, task.description, task.kind),
                           (state.attempts if state else 0) or 0, {k: getattr(self.settings, k) for k in TASK_SETTINGS})
            # The ledger row first, then the claim, then the job: a crash anywhere in between leaves
            # a row the next start settles (no job and no claim: stale; a claim: enqueued again).
            self.ledger.add(job, task.id, round_, dataclasses.asdict(spec))
            if not self.store.claim(task.id, owner_of(job)):
                self.ledger.set(job, STALE)
                continue
            self._enqueue(dataclasses.asdict(spec))
            self.store.heartbeat(task.id, owner_of(job), "queued")
            log.info("queued %s (round %d) as job %s", task.id, round_, job)

    def _enqueue(self, spec: dict) -> None:
        from rq import Retry
        from rq.job import Job

        if Job.exists(spec["job_id"], connection=self.conn):
            return  # the id is the job: never a second one (RQ would overwrite it)
        task = spec["task"]
        self.queue.enqueue(RUN_JOB, spec, job_id=spec["job_id"], job_timeout=self.settings.queue_job_timeout,
                           result_ttl=RESULT_TTL_S, failure_ttl=RESULT_TTL_S, retry=Retry(max=RETRIES),
                           description=f"{task['id']}: {task['title']}"[:200])

    def _publish(self, base: str) -> str:
        """Where workers fetch `base` from: the repository itself (workers that can see its path),
        or `queue_git` (a bare repository, ssh, git daemon) after pushing it there."""
        if base in self.d._published:
            return self.d._published[base]
        url = self.settings.queue_git or str(self.settings.repo.resolve())
        if self.settings.queue_git:
            git(self.settings.repo, "push", "-q", "--force", url, f"{base}:refs/gvpie/bases/{base}")
        self.d._published[base] = url
        return url


def _forget(job) -> None:
    """The job's data out of Redis once its result is recorded (else it expires after RESULT_TTL_S)."""
    try:
        job.delete()
    except ValueError as exc:  # a redelivered job's first execution is already gone: RQ trips over it
        log.debug("job %s not deleted (%s); it expires", job.id, exc)


def _task(row: Dispatch) -> Task:
    from auto_gvpie.jobqueue.job import task_from_json
    return task_from_json(row.spec["task"])

