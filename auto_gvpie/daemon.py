"""The long-running worker: woken by changes to the task file, safe against crashes, stopped by signals.

Threads. The main thread supervises: it owns the signal handlers, debounces file events,
does the periodic housekeeping (dead leases back to
pending, orphaned worktrees removed, a backstop re-scan) and otherwise sleeps in select()
on a wake-up pipe, so an idle daemon costs nothing between re-scans. The watchdog thread
only pokes that pipe. Workers (one by default) each drain the inbox with their own Engine,
state-store connection and LLM client, then wait for the next wake-up.

One daemon per home: an flock on `<home>/.gvpie/daemon.lock`, whose content is the
running daemon's record (pid, host, start time), read back by `describe()` for --status.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import select
import signal
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from watchdog.events import (FileClosedEvent, FileCreatedEvent, FileModifiedEvent, FileMovedEvent,
                             FileSystemEvent, FileSystemEventHandler)
from watchdog.observers import Observer

from auto_gvpie.config import ConfigError, Settings
from auto_gvpie.engine import Engine, Outcome, Stopped, run_pending
from auto_gvpie.inbox import InboxError
from auto_gvpie.llm import LLMUnreachable
from auto_gvpie.state import StateStore
from auto_gvpie.workspace import Worktree, WorkspaceError, prune_orphans, worktrees_dir

log = logging.getLogger(__name__)

LOCK_NAME = "daemon.lock"
DEBOUNCE_S = 0.1  # an editor's save or an append fires several events; act once, shortly after the first
STOP_GRACE_S = 15.0  # a stop completes within this; the runner gives a test command 10 s of it
FORCE_JOIN_S = 3.0  # the end of the grace period: interrupted workers release their own leases
_LOCK_RETRY_S = 0.5  # `describe` probes the lock for a moment; a starting daemon waits that out
_WATCHED = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]


class DaemonRunning(Exception):
    """Another daemon holds this home's lock."""

    def __init__(self, lock_path: Path, record: DaemonRecord | None):
        self.record = record
        who = (f"pid {record.pid} on {record.host}, running since {_clock(record.started_at)}"
               if record else "pid unknown")
        super().__init__(f"a daemon is already running for this home ({who}; lock {lock_path}). "
                         + (f"Stop it first (kill -TERM {record.pid}) or use another --home."
                            if record else "Stop it first or use another --home."))


@dataclass
class DaemonRecord:
    pid: int
    host: str
    started_at: float
    workers: int
    interval: float
    tasks_file: str
    stopped_at: float | None = None


@dataclass
class DaemonReport:
    outcomes: list[Outcome]
    interrupted: bool  # a second signal cut the stop short


class _HomeLock:
    """The flock that makes a daemon the only one for its home; the file holds its record."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self, record: DaemonRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + _LOCK_RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise DaemonRunning(self.path, read_record(self.path)) from None
                time.sleep(0.05)
        self.fd = fd
        self.write(record)

    def write(self, record: DaemonRecord) -> None:
        assert self.fd is not None
        data = json.dumps(asdict(record)).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def read_record(lock_path: Path) -> DaemonRecord | None:
    """The record a daemon wrote into its lock file; None when there is none (yet)."""
    for _ in range(10):  # a daemon that just took the lock writes its record a moment later
        try:
            text = lock_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if text.strip():
            try:
                return DaemonRecord(**json.loads(text))
            except (ValueError, TypeError):
                return None
        time.sleep(0.05)
    return None


def lock_held(lock_path: Path) -> bool:
    """Whether a live process holds the daemon lock (a pid in a file can be stale; a lock cannot)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class _InboxEvents(FileSystemEventHandler):
    """Watchdog handler on the inbox's directory: anything that lands on the inbox's name counts,
    including a rename over it (how vim and gedit save)."""

    def __init__(self, name: str, on_change: Callable[[], None]):
        self.name = name
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(p and os.path.basename(os.fsdecode(p)) == self.name for p in paths):
            self.on_change()


class Daemon:
    def __init__(self, settings: Settings, on_outcome: Callable[[Outcome], None] | None = None,
                 progress: Callable[[str, int, str], None] | None = None):
        if settings.workers < 1:
            raise ConfigError(f"workers: must be at least 1 (got {settings.workers})")
        if settings.interval <= 0:
            raise ConfigError(f"interval: must be > 0 seconds (got {settings.interval:g})")
        self.settings = settings
        self.on_outcome = on_outcome or (lambda outcome: None)
        self.progress = progress
        self.outcomes: list[Outcome] = []
        self.owners: set[str] = set()
        self._stopping = threading.Event()
        self._signals: list[int] = []
        self._file_changed = False
        # Workers wait on this condition for a new "generation" of work (a debounced file event or a re-scan).
        self._cond = threading.Condition()
        self._generation = 0
        self._reason = "start"
        self._retry_at = 0.0
        self._llm_down = False
        self._inbox_error: str | None = None
        self._fatal: Exception | None = None  # a worker could not go on (e.g. the embedded model is missing)
        self._live = 0  # workers not yet finished; counted here because is_alive() lags a finished thread
        self._ready = 0  # workers that have set up their engine
        self._proposer: str | None = None  # the worker that runs the architect when idle
        self._proposals = 0
        self._last_proposal = float("-inf")
        self._proposals_stopped = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- the main thread ----------------------------------------------------------------------

    def run(self, on_started: Callable[[DaemonRecord], None] | None = None) -> DaemonReport:
        """Serve until SIGINT/SIGTERM; raises DaemonRunning when another daemon has this home."""
        settings = self.settings
        record = DaemonRecord(os.getpid(), socket.gethostname(), time.time(), settings.workers,
                              settings.interval, str(settings.tasks_file))
        lock = _HomeLock(settings.state_dir)
        lock.acquire(record)
        observer = Observer()
        previous: dict = {}
        workers: list[threading.Thread] = []
        interrupted = False
        try:
            store = StateStore(settings.state_dir)
            try:
                self._housekeeping(store)
                settings.tasks_file.parent.mkdir(parents=True, exist_ok=True)
                observer.schedule(_InboxEvents(settings.tasks_file.name, self._on_file_event),
                                  str(settings.tasks_file.parent), recursive=False, event_filter=_WATCHED)
                observer.start()
                previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
                for n in range(1, settings.workers + 1):
                    owner = f"daemon-{record.pid}-w{n}-{uuid.uuid4().hex[:6]}"
                    self.owners.add(owner)
                    self._proposer = self._proposer or owner
                    workers.append(threading.Thread(target=self._work, args=(owner,), name=f"gvpie-worker-{n}",
                                                    daemon=True))
                self._live = len(workers)
                for worker in workers:
                    worker.start()
                self._wait_ready(len(workers))
                log.info("daemon started: pid %d, watching %s, %d worker(s), re-scan every %g s",
                         record.pid, settings.tasks_file, settings.workers, settings.interval)
                if on_started:
                    on_started(record)
                try:
                    stopped_in_time = self._supervise(store)
                except KeyboardInterrupt:
                    interrupted, stopped_in_time = True, False
                for signum in previous:
                    signal.signal(signum, signal.SIG_IGN)  # from here on nothing may cut the release short
                if not stopped_in_time:
                    self._force_stop(workers, "second signal" if interrupted
                                     else "the running task did not stop within the grace period")
                self._release_ours(store)
            finally:
                store.close()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)
            record.stopped_at = time.time()
            lock.write(record)
            lock.release()
            for worker in workers:
                worker.join(timeout=1.0 if self._live == 0 else 0.0)
            if not observer.is_alive() and not any(w.is_alive() for w in workers):
                # A worker stuck in a system call may still poke; never hand it a recycled descriptor.
                os.close(self._wake_r)
                os.close(self._wake_w)
        if self._fatal is not None:
            raise self._fatal
        log.info("daemon stopped: %d task(s) processed", len(self.outcomes))
        return DaemonReport(list(self.outcomes), interrupted)

    def _wait_ready(self, count: int) -> None:
        """Until every worker has its engine (imports, memory, model) or has failed, or a signal came."""
        with self._cond:
            while self._ready + (count - self._live) < count and not self._signals:
                self._cond.wait(0.5)  # a signal handler cannot notify (it may take no locks): look now and then

    def _supervise(self, store: StateStore) -> bool:
        """The main loop; returns True once every worker stopped by itself after a signal,
        False when the grace period ran out first."""
        now = time.monotonic()
        next_scan = now + self.settings.interval
        fire_at: float | None = None
        deadline: float | None = None
        while True:
            due = [t for t in (next_scan, deadline, fire_at) if t is not None]
            select.select([self._wake_r], [], [], max(0.0, min(due) - time.monotonic()))
            self._drain_pipe()
            now = time.monotonic()
            if (self._signals or self._fatal) and deadline is None:
                deadline = now + STOP_GRACE_S - FORCE_JOIN_S
                why = signal.Signals(self._signals[0]).name if self._signals else f"worker failed: {self._fatal}"
                log.info("stopping (%s): no new tasks; the running one gets up to %g s to finish",
                         why, STOP_GRACE_S - FORCE_JOIN_S)
                self._stopping.set()
                with self._cond:
                    self._cond.notify_all()
            if deadline is not None:
                if self._live == 0:
                    return True
                if now >= deadline:
                    return False
            if deadline is not None:
                continue
            if self._file_changed:
                self._file_changed = False
                fire_at = fire_at or now + DEBOUNCE_S
            if fire_at is not None and now >= fire_at:
                fire_at = None
                self._wake("file change")
            if now >= next_scan:
                self._housekeeping(store)
                self._wake("re-scan")
                next_scan = now + self.settings.interval

    def _on_signal(self, signum: int, frame) -> None:
        # Runs in the main thread between bytecodes: take no locks here, only flag and poke.
        self._signals.append(signum)
        if len(self._signals) > 1:
            raise KeyboardInterrupt
        self._poke()

    def _on_file_event(self) -> None:
        self._file_changed = True
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the main thread is woken anyway) or closed (we are stopping)

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _wake(self, reason: str) -> None:
        with self._cond:
            self._generation += 1
            self._reason = reason
            self._cond.notify_all()

    def _housekeeping(self, store: StateStore) -> None:
        """Dead leases back to pending; worktrees no live lease holds (a killed process's) removed."""
        store.recover_stale()
        prune_orphans(self.settings.repo, self.settings.state_dir, store.live_leases)

    def _force_stop(self, workers: list[threading.Thread], why: str) -> None:
        """Stop now: interrupt the workers so the engine releases and cleans up as it unwinds. A worker
        blocked in a system call (waiting on the LLM) cannot be interrupted; `_release_ours` covers it."""
        log.warning("stopping at once (%s)", why)
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for worker in workers:
            if worker.is_alive() and worker.ident is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident),
                                                           ctypes.py_object(KeyboardInterrupt))
        end = time.monotonic() + FORCE_JOIN_S
        for worker in workers:
            worker.join(max(0.0, end - time.monotonic()))

    def _release_ours(self, store: StateStore) -> None:
        for task_id, state in store.all().items():
            if state.status == "in_progress" and state.lease_owner in self.owners:
                store.release(task_id, state.lease_owner)
                if (worktrees_dir(self.settings.state_dir) / task_id).exists():
                    Worktree(self.settings.repo, self.settings.state_dir, task_id).remove()
                log.warning("released %s back to pending (its worker did not stop in time)", task_id)

    # -- workers ------------------------------------------------------------------------------

    def _work(self, owner: str) -> None:
        try:
            self._serve(owner)
        except KeyboardInterrupt:
            pass  # a forced stop: the engine released the task on its way out
        except Exception as exc:
            log.error("worker %s stopped the daemon: %s", owner, exc)
            self._fatal = exc
        finally:
            with self._cond:
                self._live -= 1
                self._cond.notify_all()
            self._poke()  # the supervisor waits for workers to finish

    def _serve(self, owner: str) -> None:
        engine = Engine.open(self.settings, owner, progress=self.progress, should_stop=self._stopping.is_set,
                             on_outcome=self._report)
        # One worker proposes (the first), so that two idle workers never propose at once.
        architect = self._architect(engine) if owner == self._proposer else None
        try:
            with self._cond:
                self._ready += 1
                self._cond.notify_all()
            seen: int | None = None
            while (work := self._take_work(seen)) is not None:
                seen, reason = work
                self._drain(engine, reason, architect)
        finally:
            engine.close()

    def _take_work(self, seen: int | None) -> tuple[int, str] | None:
        """Block until there is a generation of work this worker has not drained; None on stop."""
        with self._cond:
            while not self._stopping.is_set():
                backoff = self._retry_at - time.monotonic()
                if backoff > 0:
                    self._cond.wait(backoff)
                elif self._generation != seen:
                    return self._generation, self._reason
                else:
                    self._cond.wait()
        return None

    def _architect(self, engine: Engine):
        if not (self.settings.goal or self.settings.roadmap):
            return None
        from auto_gvpie.architect import Architect
        return Architect(self.settings, engine.llm, engine.sandbox)

    def _drain(self, engine: Engine, reason: str, architect=None) -> None:
        if reason != "re-scan":  # a re-scan that finds nothing is not worth a line every interval
            log.info("woke (%s)", reason)
        try:
            outcomes = run_pending(engine)
            if architect is not None:
                if outcomes:
                    architect.settle(engine.store)
                else:
                    self._propose(architect, engine)
        except Stopped:
            return
        except LLMUnreachable as exc:
            if not self._llm_down:
                log.warning("LLM unreachable: %s; tasks stay pending, retrying every %g s",
                            exc, self.settings.interval)
            self._llm_down = True
            self._back_off()
            return
        except WorkspaceError as exc:
            log.error("cannot use the target repository: %s; tasks stay pending, retrying every %g s",
                      exc, self.settings.interval)
            self._back_off()
            return
        except InboxError as exc:
            if str(exc) != self._inbox_error:
                log.error("cannot read the task file, waiting for it to change: %s", exc)
            self._inbox_error = str(exc)
            return
        except Exception:
            log.exception("worker error; retrying in %g s", self.settings.interval)
            self._back_off()
            return
        self._inbox_error = None
        if self._llm_down and outcomes:
            log.info("LLM reachable again")
            self._llm_down = False
        for outcome in outcomes:
            if outcome not in self.outcomes:  # tasks settled without running (a dependency failed)
                self._report(outcome)
        if outcomes and reason == "re-scan":
            log.info("re-scan: %d task(s) processed", len(outcomes))

    def _propose(self, architect, engine: Engine) -> None:
        """Idle: one architect step, at most one per interval and `max_iterations` in all. A queued
        task is an append to the task file, which wakes the workers like any other."""
        limit = self.settings.max_iterations
        if self._proposals_stopped or (limit and self._proposals >= limit):
            return
        if time.monotonic() - self._last_proposal < self.settings.interval:
            return
        self._last_proposal = time.monotonic()
        self._proposals += 1
        step = architect.step(engine.store)
        if step.action in ("stopped", "done"):
            log.warning("%s", step.line())
            self._proposals_stopped = True

    def _report(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.on_outcome(outcome)

    def _back_off(self) -> None:
        """Try again after one interval, not at the next file event (a down server stays down a while)."""
        with self._cond:
            self._retry_at = time.monotonic() + self.settings.interval
            self._generation += 1
            self._reason = "retry"


# -- what --status shows ----------------------------------------------------------------------


def describe(settings: Settings, store: StateStore) -> list[str]:
    """Lines for --status: is a daemon running, since when, and what is it doing."""
    lock_path = settings.state_dir / LOCK_NAME
    record = read_record(lock_path) if lock_path.exists() else None
    if record is None:
        return ["daemon: not running"]
    if not lock_held(lock_path):
        if record.stopped_at is None:
            return [f"daemon: not running (pid {record.pid} died at some point after {_clock(record.started_at)}"
                    " without stopping; its tasks go back to pending on the next start)"]
        return [f"daemon: not running (pid {record.pid} stopped {_clock(record.stopped_at)})"]
    now = time.time()
    lines = [f"daemon: running, pid {record.pid} on {record.host}, up {duration(now - record.started_at)},"
             f" {record.workers} worker(s), re-scan every {record.interval:g} s"]
    running = sorted((s for s in store.all().values() if s.status == "in_progress" and s.lease_pid == record.pid),
                     key=lambda s: s.id)
    for state in running:
        beat = f"last heartbeat {duration(now - state.heartbeat)} ago" if state.heartbeat else "no heartbeat yet"
        lines.append(f"daemon task: {state.id}: {state.stage or 'claimed'} ({beat})")
    if not running:
        lines.append("daemon task: none (idle, waiting for the task file to change)")
    return lines


def _clock(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def duration(seconds: float | None) -> str:
    """A span for people: "4.2 s", "38 s", "12 min 05 s", "3 h 20 min" ("" for None)."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
