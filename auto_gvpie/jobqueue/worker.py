"""`auto-gvpie --worker --queue URL`: run queued tasks on this machine, with its own LLM.

The RQ worker process pops a job and forks a "horse" for it (so a crashed or leaking job never
takes the worker with it); the horse is `run_job`: it fetches the base commit into this worker's
scratch clone, runs the attempts with the same `Engine` as `--once` (a job home of its own, the
patch kept rather than applied) and returns everything the dispatcher records. The worker
process beats every `queue_heartbeat` seconds, for RQ (its job stays its own) and for `--status`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rq import Worker
from rq.serializers import JSONSerializer

from auto_gvpie.config import Settings
from auto_gvpie.engine import Engine, Stopped
from auto_gvpie.llm import LLMUnreachable
from auto_gvpie.jobqueue import PROTOCOL, ProtocolMismatch, QueueError, broker
from auto_gvpie.jobqueue.job import TASK_SETTINGS, JobResult, JobSpec, encode, record_to_json, task_from_json
from auto_gvpie.jobqueue.recorder import RecordingMemory
from auto_gvpie.state import StateStore
from auto_gvpie.workspace import WorkspaceError, git

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass
class _Context:
    """What a job's horse inherits from its worker (set before RQ forks)."""
    settings: Settings
    name: str
    scratch: Path


_context: _Context | None = None


class _Worker(Worker):
    """RQ's forking worker, with the registry's hold on a running job renewed every heartbeat and
    lost three heartbeats after the worker dies (RQ's own margin is a fixed 60 s on top). At least
    10 s of slack: a busy machine can be late with a beat, and a hold that lapses while the job
    still runs has it run a second time (harmless in effect, but the LLM's time twice)."""

    def __init__(self, *args, heartbeat: int, **kwargs):
        self.gvpie_heartbeat = heartbeat
        self.gvpie_stop = False
        super().__init__(*args, job_monitoring_interval=heartbeat, **kwargs)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return max(3 * self.gvpie_heartbeat, self.gvpie_heartbeat + 10)

    def subscribe(self):
        """RQ's command channel, polled every second instead of every 60: a stop joins this thread,
        and waited out its whole poll."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=1, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def request_stop(self, signum, frame):
        self.gvpie_stop = True
        log.info("stop requested (%s): finishing the running job, taking no new one", signal.Signals(signum).name)
        super().request_stop(signum, frame)


class _Beats(threading.Thread):
    """This worker's heartbeat for `--status` (host, LLM, current task), on its own connection."""

    def __init__(self, url: str, name: str, settings: Settings):
        super().__init__(name="gvpie-worker-beat", daemon=True)
        self.conn = broker.connect(url)
        self.name_ = name
        self.settings = settings
        self.worker: _Worker | None = None
        self.stop = threading.Event()
        self._down = False

    def run(self) -> None:
        llm = "embedded" if self.settings.llm == "embedded" else self.settings.llm_url
        interval = self.settings.queue_heartbeat
        while not self.stop.is_set():
            try:
                job = self.worker.get_current_job() if self.worker else None
                broker.beat(self.conn, broker.WorkerBeat(
                    self.name_, socket.gethostname(), os.getpid(), llm, "busy" if job else "idle",
                    (job.description or job.id) if job else "", time.time()), ttl=3 * interval)
                self._down = False
            except broker.REDIS_DOWN as exc:
                if not self._down:
                    log.warning("heartbeat: Redis unreachable (%s); retrying", exc)
                self._down = True
            except Exception:
                log.exception("heartbeat failed")
            self.stop.wait(interval)
        try:
            broker.forget(self.conn, self.name_)
        except broker.REDIS_DOWN:
            pass


def serve(settings: Settings, url: str, on_started: Callable[[str], None] | None = None) -> None:
    """Run jobs until SIGINT/SIGTERM (the running job is finished first; a second signal ends it).
    Raises ProtocolMismatch against a dispatcher of another protocol, QueueError when Redis cannot
    be reached at start. Redis going away later is waited out."""
    global _context
    # The engine's imports bring LanceDB into this process, which warns on every fork; this process
    # never opens a table (a job's memory travels with it), so no LanceDB state is mid-operation.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    conn = broker.connect(url)
    broker.ping(conn, url)
    broker.check_protocol(conn, url)
    name = f"{socket.gethostname()}-{os.getpid()}"
    scratch = _scratch(settings.state_dir)
    _context = _Context(settings, name, scratch)
    beats = _Beats(url, name, settings)
    beats.start()
    log.info("worker %s started on %s (protocol %d), LLM %s", name, url, PROTOCOL, settings.llm_url)
    if on_started:
        on_started(name)
    round_ = 0
    try:
        while True:
            round_ += 1
            worker = _Worker([broker.work_queue(conn)], connection=conn, name=f"{name}-{round_}",
                             serializer=JSONSerializer, heartbeat=settings.queue_heartbeat,
                             worker_ttl=max(30, 3 * settings.queue_heartbeat),
                             maintenance_interval=max(30, 6 * settings.queue_heartbeat))
            beats.worker = worker
            try:
                worker.work(logging_level="WARNING", with_scheduler=False)
            except broker.REDIS_DOWN as exc:
                log.warning("Redis went away (%s)", exc)
            if worker.gvpie_stop:
                break
            # RQ's loop gives up on some connection errors: wait for Redis and serve again.
            _wait_for_redis(conn)
    finally:
        beats.stop.set()
        beats.join(timeout=5)
        log.info("worker %s stopped", name)


def _scratch(state_dir: Path) -> Path:
    """This worker's scratch directory (its clone, its job homes), kept between runs so the clone is
    only brought up to date; several workers sharing a home each lock one of their own."""
    for n in range(1, 1000):
        path = state_dir / ("worker" if n == 1 else f"worker-{n}")
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.append(fd)  # held until this process ends
        return path
    raise QueueError(f"no free worker directory under {state_dir}")


_held: list[int] = []


def _wait_for_redis(conn) -> None:
    delay = 0.5
    while True:
        try:
            conn.ping()
            log.info("Redis reachable again")
            return
        except broker.REDIS_DOWN:
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


# -- one job, in the horse --------------------------------------------------------------------


def run_job(payload: dict) -> dict:
    """The job RQ runs (by this name, in a forked horse): returns a JobResult as JSON."""
    _die_with_worker()
    ctx = _context
    assert ctx is not None, "run_job runs in a worker started by serve()"
    spec = JobSpec.from_json(payload)
    if spec.protocol != PROTOCOL:
        raise ProtocolMismatch(f"job {spec.job_id} is in protocol {spec.protocol}, this worker speaks {PROTOCOL}")
    started, started_at = time.monotonic(), time.time()
    task = task_from_json(spec.task)
    home = ctx.scratch / "jobs" / spec.job_id
    shutil.rmtree(home, ignore_errors=True)  # a redelivered job starts clean
    home.mkdir(parents=True)
    repo = ctx.scratch / "repo"
    taken = {k: v for k, v in spec.settings.items() if k in TASK_SETTINGS}
    settings = dataclasses.replace(ctx.settings, **taken, home=home, tasks_file=home / "auto_tasks.json", repo=repo,
                                   apply="none", workers=1)
    log.info("job %s: task %s (round %d) at %s", spec.job_id, task.id, spec.round, spec.base[:12])
    memory = RecordingMemory(spec.recall)
    status, attempts, error = "pending", spec.attempts_before, None
    runs: list[dict] = []
    score = verdict = None
    try:
        try:
            _checkout(repo, spec.git_url, spec.base)
            store = StateStore(settings.state_dir)
            store.sync([task])
            store.seed_attempts(task.id, spec.attempts_before)
            store.close()
            engine = Engine.open(settings, owner=f"worker-{ctx.name}", memory=memory)
        except (LLMUnreachable, WorkspaceError) as exc:
            raise _Released(str(exc)) from exc
        try:
            outcome = engine.run_task(task)
            status, attempts, error = outcome.status, outcome.attempts, outcome.error
        except (LLMUnreachable, WorkspaceError, Stopped) as exc:
            raise _Released(f"{type(exc).__name__}: {exc}") from exc
        finally:
            runs = engine.store.runs(task.id)
            state = engine.store.get(task.id)
            attempts = max(attempts, state.attempts or 0)
            score, verdict = state.score, state.verdict
            engine.close()
    except _Released as exc:
        status, error = "pending", str(exc)
        log.info("job %s: %s goes back to the dispatcher: %s", spec.job_id, task.id, error)
    files = {p.name: encode(p.read_bytes()) for p in sorted(settings.artifacts_dir.glob("*")) if p.is_file()}
    result = JobResult(spec.job_id, task.id, status, attempts, error, ctx.name, str(settings.artifacts_dir), files,
                       runs, [record_to_json(r) for r in memory.records], time.monotonic() - started, started_at,
                       score, verdict)
    shutil.rmtree(home, ignore_errors=True)
    return dataclasses.asdict(result)


class _Released(Exception):
    """Not the task's fault (this worker's LLM is down, the repository cannot be fetched): the
    dispatcher puts the task back to pending."""


def _die_with_worker() -> None:
    """A horse never outlives its worker: killed with it (kill -9, a machine going down), so the
    job is handed to another worker instead of finishing unseen by anyone."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: a killed worker's horse finishes on its own; the result still counts once
    if os.getppid() == 1:
        os._exit(1)  # the worker died before the call above took effect


def _checkout(repo: Path, url: str, base: str) -> None:
    """`base` checked out (detached, clean) in this worker's scratch clone, fetched from `url`."""
    if not (repo / ".git").exists():
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        git(repo, "init", "-q")
    if git(repo, "cat-file", "-e", f"{base}^{{commit}}", check=False).returncode != 0:
        git(repo, "fetch", "-q", "--no-tags", url, "+refs/heads/*:refs/remotes/origin/*", "+refs/gvpie/*:refs/gvpie/*")
        if git(repo, "cat-file", "-e", f"{base}^{{commit}}", check=False).returncode != 0:
            git(repo, "fetch", "-q", url, base)  # a commit no branch holds (servers that allow it)
    git(repo, "checkout", "-q", "--detach", "--force", base)
    git(repo, "clean", "-q", "-fdx")
    git(repo, "worktree", "prune", check=False)
