"""Command line of Auto-GVPIE: parse the flags, call the package, turn errors into exit codes.

Exit codes: 0 every processed task done (or nothing to do); 1 some task failed;
2 usage or input error; 3 the LLM server cannot be reached (tasks stay pending).
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as `python auto_gvpie/orchestrator.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auto_gvpie.actions import ActionError, add_task, cancel_task
from auto_gvpie.config import ConfigError, Settings, load_settings
from auto_gvpie.inbox import InboxError, Status, read_inbox, runnable
from auto_gvpie.state import StateStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
log = logging.getLogger("auto_gvpie")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="auto-gvpie",
        description="Autonomous development worker: takes tasks from auto_tasks.json, asks a local LLM for a "
                    "patch or a pixel program, tests it in an isolated git worktree, retries, remembers.",
        epilog="Exit codes: 0 all processed tasks done (or nothing to do), 1 some task failed, "
               "2 usage or input error, 3 the LLM server cannot be reached (tasks stay pending).")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="process pending tasks, then exit (the default)")
    mode.add_argument("--status", action="store_true", help="tasks by status, with attempts and last error")
    mode.add_argument("--daemon", action="store_true", help="long-running worker, woken by changes to the task file")
    mode.add_argument("--dry-run", action="store_true", help="show what would be done; change nothing")
    mode.add_argument("--add", metavar="TITLE", help="append a task safely")
    mode.add_argument("--worker", action="store_true", help="run tasks from the --queue on this machine")
    mode.add_argument("--cancel", metavar="ID", help="cancel a pending task, or stop a running one (it ends cancelled)")
    mode.add_argument("--serve", action="store_true",
                      help="local web dashboard: queue, tasks, gallery, history, memory, daemon (127.0.0.1 unless a "
                           "token is set)")
    mode.add_argument("--report", action="store_true", help="a summary of what happened on stdout (and --html FILE)")
    p.add_argument("--scores", action="store_true",
                   help="with --status: the trainer's scores per task and skill tag, the trend, and a PNG chart")
    p.add_argument("--max-tasks", type=int, metavar="N", help="at most N tasks this run")
    p.add_argument("--home", metavar="DIR", help="where auto_tasks.json, artifacts/, lancedb/ live (default: .)")
    p.add_argument("--tasks", metavar="FILE", help="task file (default: HOME/auto_tasks.json)")
    p.add_argument("--repo", metavar="DIR", help="target git repository (default: HOME)")
    p.add_argument("--llm", choices=("http", "embedded"), help="'embedded': the bundled local model instead of a server")
    p.add_argument("--llm-url", metavar="URL", help="OpenAI-compatible server (default: LM Studio, http://127.0.0.1:1234/v1)")
    p.add_argument("--model", metavar="NAME", help="model name (default: auto-detected from the server)")
    p.add_argument("--json", action="store_true", help="one machine-readable JSON object on stdout")
    p.add_argument("--queue", metavar="redis://HOST:PORT/DB",
                   help="with --daemon: dispatch tasks to workers on this Redis queue; with --worker: run its tasks")
    add = p.add_argument_group("task fields for --add")
    add.add_argument("--kind", choices=("code", "pixel"))
    add.add_argument("--description", metavar="TEXT")
    add.add_argument("--input", action="append", metavar="P", dest="inputs", help="input path in the repo (repeatable)")
    add.add_argument("--test", action="append", metavar="CMD", dest="tests", help="test command (repeatable)")
    add.add_argument("--priority", type=int, metavar="N", help="higher runs first (default 5)")
    add.add_argument("--depends-on", action="append", metavar="ID", dest="depends_on")
    add.add_argument("--max-attempts", type=int, metavar="N")
    add.add_argument("--id", metavar="ID", dest="task_id")
    add.add_argument("--tag", action="append", metavar="T", dest="tags", help="skill tag (repeatable)")
    web = p.add_argument_group("dashboard (--serve) and report (--report)")
    web.add_argument("--host", default="127.0.0.1", metavar="ADDRESS", help="--serve: address to listen on (default 127.0.0.1; "
                     "another needs --token)")
    web.add_argument("--port", type=int, default=8765, metavar="N", help="--serve: port (default 8765)")
    web.add_argument("--token", metavar="T", help="--serve: every request must carry it (also token in gvpie.toml)")
    web.add_argument("--since", metavar="DURATION", help="--report: only what finished in the last DURATION "
                     "(e.g. 12h, 30m, 2d; default: everything)")
    web.add_argument("--html", metavar="FILE", help="--report: also write the report as one HTML file")
    more = p.add_argument_group("worker settings (also GVPIE_* variables and HOME/gvpie.toml)")
    more.add_argument("--edit-format", choices=("auto", "whole", "search_replace", "udiff", "symbol"))
    more.add_argument("--apply", choices=("checkout", "branch", "none"),
                      help="where a finished patch goes: your working tree (default), a new branch, or artifacts only")
    more.add_argument("--samples", type=int, metavar="N",
                      help="candidate answers per attempt, each tried on its own copy of the tree; the first that "
                           "passes every check wins (default 1)")
    more.add_argument("--sandbox", choices=("auto", "on", "off"),
                      help="run test commands under bubblewrap: read-only filesystem but the worktree, private /tmp, "
                           "no network, nothing outlives them (auto: where bubblewrap works; the default)")
    more.add_argument("--gpu", action="store_true", default=None, help="also run pixel programs on the GPU runner")
    more.add_argument("--no-memory", action="store_false", dest="memory", default=None, help="do not use LanceDB memory")
    more.add_argument("--interval", type=float, metavar="S", help="daemon: seconds between backstop re-scans")
    more.add_argument("--workers", type=int, metavar="N", help="daemon: tasks run at once (default 1)")
    arch = p.add_argument_group("architect: with nothing pending, propose one task at a time")
    arch.add_argument("--goal", metavar="TEXT", help="what the proposals should work toward")
    arch.add_argument("--roadmap", metavar="FILE", help="a Markdown checklist of milestones (never written)")
    arch.add_argument("--auto", action="store_true",
                      help="with --once: propose (toward the goal / the next unfinished milestone) when the queue is empty")
    arch.add_argument("--max-iterations", type=int, metavar="N",
                      help="at most N proposals this run (--once --auto: default 1; --daemon: no limit)")
    judge = p.add_argument_group("judge: a review of each result that passed its checks")
    judge.add_argument("--judge", action="store_true", default=None,
                       help="a model scores each passing result 0-10; below the threshold it is retried with the "
                            "reasons, and when attempts run out the best passing result is kept")
    judge.add_argument("--judge-url", metavar="URL", help="a second OpenAI-compatible server for the judge")
    judge.add_argument("--judge-model", metavar="NAME", help="the judge's model (default: the worker's own)")
    judge.add_argument("--judge-threshold", type=int, metavar="N", help="the score a result needs (default 8)")
    more.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr too")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings({
        "home": args.home, "tasks_file": args.tasks, "repo": args.repo, "llm": args.llm, "llm_url": args.llm_url,
        "model": args.model, "edit_format": args.edit_format, "apply": args.apply, "gpu": args.gpu,
        "memory": args.memory, "interval": args.interval, "workers": args.workers, "sandbox": args.sandbox,
        "samples": args.samples, "judge": args.judge, "judge_url": args.judge_url, "judge_model": args.judge_model,
        "judge_threshold": args.judge_threshold, "goal": args.goal, "roadmap": args.roadmap,
        "max_iterations": args.max_iterations, "token": args.token, "queue": args.queue})


def _setup_logging(settings: Settings | None, verbose: bool) -> None:
    root = logging.getLogger("auto_gvpie")
    root.setLevel(logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(console)
    if settings is not None:
        logs = settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(logs / "gvpie.log", maxBytes=2_000_000, backupCount=5)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        root.addHandler(handler)


class StatusLine:
    """One live line on stderr: task, attempt, stage. Rewritten in place on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, task_id: str, attempt: int, stage: str) -> None:
        if not self.enabled:
            return
        text = f"[{task_id}] attempt {attempt}: {stage}"
        if self.tty:
            width = os.get_terminal_size(sys.stderr.fileno()).columns - 1
            sys.stderr.write("\r\033[K" + text[:width])
            sys.stderr.flush()
        elif not (stage.startswith("LLM answering") and self.last.startswith("LLM answering")):
            print(text, file=sys.stderr)
        self.last = stage

    def bar(self, phase: str, done: int, total: int) -> None:
        """A progress bar for long preparation (assembling and verifying the bundled model)."""
        if not self.enabled or not total:
            return
        filled = int(30 * done / total)
        text = f"{phase}: [{'#' * filled}{'.' * (30 - filled)}] {100 * done // total}%"
        if self.tty:
            sys.stderr.write("\r\033[K" + text + ("\n" if done >= total else ""))
            sys.stderr.flush()
        elif done >= total or phase != self.last:
            print(text, file=sys.stderr)
        self.last = phase

    def done(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(("\r\033[K" if self.tty else "") + text + "\n")


# -- commands ------------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    fields = {"title": args.add}
    for key, value in (("id", args.task_id), ("kind", args.kind), ("description", args.description),
                       ("inputs", args.inputs), ("tests", args.tests), ("priority", args.priority),
                       ("depends_on", args.depends_on), ("max_attempts", args.max_attempts), ("tags", args.tags)):
        if value is not None:
            fields[key] = value
    task = add_task(settings, fields)
    if args.json:
        print(json.dumps({"added": {"id": task.id, "title": task.title, "kind": task.kind}}))
    else:
        print(f"added {task.id} ({task.kind}) to {settings.tasks_file}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    try:
        done = cancel_task(settings, args.cancel)
    except ActionError as exc:
        print(f"auto-gvpie: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"cancelled": done.task_id, "was": done.was}))
    else:
        print(done.message)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from auto_gvpie.web.app import TokenRequired, serve

    if not 1 <= args.port <= 65535:
        print("auto-gvpie: --port must be between 1 and 65535", file=sys.stderr)
        return EXIT_USAGE
    token = settings.token or None
    shown = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "")

    def ready() -> None:
        print(f"auto-gvpie dashboard for {settings.home}: {address}\nCtrl-C stops it (the daemon, if one runs, "
              "goes on).", file=sys.stderr)

    try:
        serve(settings, args.host, args.port, token, on_ready=ready)
    except TokenRequired as exc:
        print(f"auto-gvpie: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the port is taken, or the address is not this machine's
        print(f"auto-gvpie: cannot listen on {shown}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from auto_gvpie.web.report import build_report, write_report
    from auto_gvpie.web.views import parse_duration

    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        print(f"auto-gvpie: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = write_report(settings, Path(args.html), since) if args.html else build_report(settings, since)
    if args.json:
        print(json.dumps({"summary": report.summary, "html": args.html,
                          "finished": [r.as_json() for r in report.finished]}))
    else:
        print(report.summary)
        if args.html:
            print(f"report written to {args.html}")
    return EXIT_OK


def _read_tasks(settings: Settings, store: StateStore) -> list:
    """The inbox with final ids, without writing the store (--status, --dry-run, --add)."""
    return store.resolve(read_inbox(settings.tasks_file))


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    store = StateStore(settings.state_dir, readonly=True)
    tasks = _read_tasks(settings, store)
    if args.scores:
        return cmd_scores(args, settings, store, tasks)
    states = store.all()
    status = store.statuses(tasks)
    _, why = runnable(tasks, status)
    rows = []
    for task in tasks:
        state = states.get(task.id)
        error = (state.last_error if state else None) or (why.get(task.id) if status[task.id] == Status.PENDING else None)
        rows.append((task, status[task.id], state.attempts if state else 0, error, state.stage if state else None,
                     state.warnings if state else [], state.notes if state else []))
    counts = {s.value: 0 for s in Status}
    for _, task_status, *_ in rows:
        counts[task_status] += 1
    sandbox = _sandbox_line(settings)
    if args.json:
        print(json.dumps({"counts": counts, "sandbox": sandbox, "tasks": [
            {"id": t.id, "title": t.title, "status": s, "attempts": a, "error": e, "warnings": w, "notes": n,
             "score": states[t.id].score if t.id in states else None}
            for t, s, a, e, _, w, n in rows]}))
        return EXIT_OK
    print(f"tasks: {settings.tasks_file}   " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    from auto_gvpie import architect
    from auto_gvpie.daemon import describe
    for line in describe(settings, store) + architect.describe(settings):
        print(line)
    for line in _queue_lines(settings):
        print(line)
    print(_memory_line(settings))
    print(sandbox)
    if not rows:
        print("no tasks yet — add one with: auto-gvpie --add 'TITLE'")
        return EXIT_OK
    head = ("ID", "KIND", "STATUS", "TRIES", "PRI", "LAST ERROR / STAGE")
    table = [(t.id, t.kind + ("*" if t.kind_inferred else ""), s, f"{a}/{t.max_attempts}", str(t.priority),
              (stage if s == Status.IN_PROGRESS and stage else e or "").replace("\n", " ")[:70])
             for t, s, a, e, stage, _, _ in rows]
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(5)]
    for row in [head, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[5])
    for task, task_status, _, error, _, warnings, notes in rows:
        for warning in warnings:
            print(f"warning: {task.id}: {warning}")
        for note in notes:
            print(f"note: {task.id}: {note}")
        if task.id in states and states[task.id].verdict:
            print(f"review: {task.id}: {states[task.id].verdict}")
        if task_status == Status.PENDING and error and (len(error) > 70 or "\n" in error):
            # Why a task waits (the repository or its tests cannot be used) is worth reading whole.
            print(f"waiting: {task.id}: " + "\n  ".join(error.strip().splitlines()[:4]))
    if any(t.kind_inferred for t, *_ in rows):
        print("* kind inferred from the title and description (set \"kind\" to choose)")
    return EXIT_OK


def cmd_scores(args: argparse.Namespace, settings: Settings, store: StateStore, tasks: list) -> int:
    from auto_gvpie import trainer

    scores = trainer.score(tasks, store.all(), store.seconds())
    path = trainer.chart(scores, settings.state_dir / "scores.png")
    if args.json:
        print(json.dumps({**scores.as_json(), "chart": str(path)}))
        return EXIT_OK
    print(f"{len(scores.tasks)} finished task(s); next task: {scores.difficulty} ({scores.why})")
    if scores.tasks:
        print("trend (success rate of the last %d): %s" % (trainer.WINDOW, " ".join(f"{r:.2f}" for r in scores.trend[-12:])))
        head = ("TAG", "TASKS", "DONE", "SCORE", "TRIES", "LAST SEEN")
        table = [(s.tag, str(s.tasks), f"{s.success_rate:.0%}", f"{s.mean_value:.2f}", f"{s.mean_attempts:.1f}",
                  "latest" if s.last_seen == 0 else f"{s.last_seen} tasks ago") for s in scores.skills]
        widths = [max(len(r[i]) for r in [head, *table]) for i in range(len(head))]
        for row in [head, *table]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        for task in scores.tasks[-10:]:
            judge = f", judge {task.judge}/10" if task.judge is not None else ""
            print(f"  {task.task_id}: {task.status}, {task.attempts}/{task.max_attempts} attempts{judge}, "
                  f"{task.seconds:.0f} s, score {task.value:.2f}")
    if scores.due:
        print("not practised for a while: " + ", ".join(scores.due))
    print(f"chart: {path}")
    return EXIT_OK


def _sandbox_line(settings: Settings) -> str:
    from auto_gvpie.sandbox import SandboxError, open_sandbox
    try:
        return open_sandbox(settings.sandbox, settings.sandbox_network).describe()
    except SandboxError as exc:
        return f"sandbox: on was asked for, but {exc}"


def _memory_line(settings: Settings) -> str:
    if not settings.memory:
        return "memory: off"
    if not (settings.home / "lancedb").exists():
        return "memory: empty (nothing recorded yet)"
    from auto_gvpie.memory import Memory
    memory = Memory(settings.home)
    try:
        return memory.summary_line()
    finally:
        memory.close()


def cmd_dry_run(args: argparse.Namespace, settings: Settings) -> int:
    store = StateStore(settings.state_dir, readonly=True)
    tasks = _read_tasks(settings, store)
    states = store.all()
    ready, why = runnable(tasks, store.statuses(tasks))
    if args.max_tasks is not None:
        ready = ready[: args.max_tasks]
    llm = "the embedded model" if settings.llm == "embedded" else f"{settings.llm_url} ({settings.model or 'model auto-detected'})"
    plan = []
    for task in ready:
        attempts = states[task.id].attempts if task.id in states else 0
        plan.append({"id": task.id, "title": task.title, "kind": task.kind, "kind_inferred": task.kind_inferred,
                     "priority": task.priority, "attempts_left": task.max_attempts - attempts,
                     "inputs": list(task.inputs), "tests": list(task.tests)})
    proposal = _dry_proposal(settings, store) if args.goal or args.roadmap else None
    if args.json:
        print(json.dumps({"would_run": plan, "not_ready": why, "llm": llm,
                          **({"architect": proposal} if proposal else {})}))
        return EXIT_OK
    asks = "the architect asks it for one proposal" if args.goal or args.roadmap else "no LLM is called"
    print(f"dry run: nothing is changed and {asks} (would ask {llm})")
    if not plan:
        print("nothing to do")
    for n, item in enumerate(plan, 1):
        kind = item["kind"] + (" (inferred)" if item["kind_inferred"] else "")
        print(f"{n}. {item['id']} [{kind}, priority {item['priority']}, up to {item['attempts_left']} attempt(s)]: {item['title']}")
        if item["kind"] == "code":
            print(f"   would work in a git worktree of {settings.repo}; inputs: {', '.join(item['inputs']) or '(none)'}")
            for test in item["tests"]:
                print(f"   would run: {test}")
        else:
            print(f"   would write {settings.artifacts_dir}/{item['id']}.json and .png")
    for task_id, reason in why.items():
        print(f"   not ready: {task_id}: {reason}")
    if proposal:
        print(f"architect (dry run, nothing queued): {proposal['action']}"
              + (f": {proposal['reason']}" if proposal["reason"] else ""))
        if proposal["task"]:
            print(json.dumps(proposal["task"], indent=2))
    return EXIT_OK


def _require_queue_library() -> None:
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
    except ImportError:
        raise ConfigError("--queue needs the queue extra: pip install 'auto-gvpie[queue]'") from None


def _dry_proposal(settings: Settings, store: StateStore) -> dict:
    """--dry-run with a goal or roadmap: what the architect would propose (its checks run in a
    scratch worktree), queued nowhere."""
    from auto_gvpie.architect import Architect
    from auto_gvpie.llm import open_llm
    from auto_gvpie.sandbox import open_sandbox

    architect = Architect(settings, open_llm(settings), open_sandbox(settings.sandbox, settings.sandbox_network),
                          dry_run=True)
    step = architect.step(store)
    return {"action": step.action, "reason": step.reason,
            "task": step.proposal.as_task(architect.milestone) if step.proposal else None}


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def cmd_once(args: argparse.Namespace, settings: Settings) -> int:
    from auto_gvpie.engine import Engine, run_pending
    from auto_gvpie.llm import LLMUnreachable
    from auto_gvpie.workspace import WorkspaceError, prune_orphans

    proposing = bool(args.auto or args.goal or args.roadmap)
    if proposing and not (settings.goal or settings.roadmap):
        raise ConfigError("--auto needs a goal (--goal TEXT, or goal in gvpie.toml) or a roadmap (--roadmap FILE)")
    store = StateStore(settings.state_dir)
    try:
        store.recover_stale()
        tasks = store.sync(read_inbox(settings.tasks_file))
        ready, _ = runnable(tasks, store.statuses(tasks))
        if not ready and not proposing:
            return _report(args, [], "nothing to do")
        prune_orphans(settings.repo, settings.state_dir, store.live_leases)
    finally:
        store.close()
    status_line = StatusLine(enabled=not args.json)
    finished: list = []

    def on_outcome(outcome) -> None:
        finished.append(outcome)
        status_line.done(_outcome_line(outcome))

    engine = Engine.open(settings, owner=f"once-{os.getpid()}-{uuid.uuid4().hex[:6]}", progress=status_line,
                         on_outcome=on_outcome, model_progress=status_line.bar)
    # Ctrl-C and `kill` both stop cleanly: the running task goes back to pending and its worktree
    # is removed. Set explicitly, since a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        outcomes = run_pending(engine, args.max_tasks)
        if proposing:
            outcomes += _propose(engine, settings, status_line, args.max_iterations or 1)
    except (LLMUnreachable, WorkspaceError) as exc:
        print(f"auto-gvpie: {exc}\nThe remaining tasks were left pending.", file=sys.stderr)
        _report(args, finished, f"stopped after {len(finished)} task(s)")
        return EXIT_UNREACHABLE if isinstance(exc, LLMUnreachable) else EXIT_USAGE
    finally:
        engine.close()
    return _report(args, outcomes, f"processed {len(outcomes)} task(s) in {time.monotonic() - started:.1f} s")


def _propose(engine, settings: Settings, status_line: StatusLine, iterations: int) -> list:
    """--once --auto: with the queue drained, let the architect propose; each queued task runs at once."""
    from auto_gvpie.architect import Architect
    from auto_gvpie.engine import run_pending

    architect = Architect(settings, engine.llm, engine.sandbox)
    outcomes = []
    for _ in range(iterations):
        step = architect.step(engine.store)
        status_line.done(step.line())
        if step.action in ("stopped", "done"):
            break
        if step.action in ("queued", "regression"):
            outcomes += run_pending(engine)
            architect.settle(engine.store)
    return outcomes


def _outcome_line(outcome) -> str:
    return (f"{outcome.task_id}: {outcome.status} after {outcome.attempts} attempt(s)"
            + (f" — {outcome.error}" if outcome.error else "") + (f" — {outcome.note}" if outcome.note else ""))


def _summary(outcomes: list) -> dict:
    """The contract's --json object for a run."""
    return {"processed": len(outcomes), "done": sum(o.status == "done" for o in outcomes),
            "failed": sum(o.status == "failed" for o in outcomes), "tasks": [o.as_json() for o in outcomes]}


def _report(args: argparse.Namespace, outcomes: list, summary: str) -> int:
    counts = _summary(outcomes)
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"{summary}: {counts['done']} done, {counts['failed']} failed")
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def cmd_daemon(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until stopped: 0 after a clean stop, 2 when another daemon has this home,
    130 when a second signal cut the stop short (the running task was still released)."""
    from auto_gvpie.daemon import Daemon, DaemonRunning

    status_line = StatusLine(enabled=not args.json)

    def started(record) -> None:
        where = f"dispatching to {settings.queue}" if settings.queue else f"{settings.workers} worker(s)"
        status_line.done(f"auto-gvpie daemon: pid {record.pid}, watching {settings.tasks_file}"
                         f" ({where}); Ctrl-C or SIGTERM stops it")

    kwargs = dict(on_outcome=lambda outcome: status_line.done(_outcome_line(outcome)),
                  progress=status_line if args.verbose else None)
    if settings.queue:
        from auto_gvpie.jobqueue.dispatcher import Dispatcher  # RQ and Redis only with --queue
        daemon = Dispatcher(settings, settings.queue, **kwargs)
    else:
        daemon = Daemon(settings, **kwargs)
    try:
        report = daemon.run(on_started=started)
    except DaemonRunning as exc:
        print(f"auto-gvpie: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(exc), "pid": exc.record.pid if exc.record else None}))
        return EXIT_USAGE
    counts = _summary(report.outcomes)
    if args.json:
        print(json.dumps({**counts, "interrupted": report.interrupted}))
    else:
        status_line.done(f"daemon stopped: processed {counts['processed']} task(s): {counts['done']} done, "
                         f"{counts['failed']} failed"
                         + ("; interrupted, the running task went back to pending" if report.interrupted else ""))
    return 130 if report.interrupted else EXIT_OK


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run queued tasks until stopped (SIGINT/SIGTERM finish the running job first); 2 when the
    dispatcher on the queue speaks another protocol or Redis cannot be reached at start."""
    from auto_gvpie.jobqueue.worker import serve

    status_line = StatusLine(enabled=not args.json)
    serve(settings, settings.queue, on_started=lambda name: status_line.done(
        f"auto-gvpie worker {name}: taking tasks from {settings.queue}, LLM {settings.llm_url}; "
        "Ctrl-C or SIGTERM stops it after the running task"))
    status_line.done("worker stopped")
    return EXIT_OK


def _queue_lines(settings: Settings) -> list[str]:
    """The queue and its workers, when this home dispatches to one (asked of Redis, briefly)."""
    from auto_gvpie.jobqueue import queue_url
    url = settings.queue or queue_url(settings.state_dir)
    if not url:
        return []
    try:
        from auto_gvpie.jobqueue.broker import status_lines
    except ImportError:
        return [f"queue: {url} (install auto-gvpie[queue] to see its workers)"]
    return status_lines(url)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_tasks is not None and args.max_tasks < 1:
        print("auto-gvpie: --max-tasks must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.auto and not (args.once or not any((args.status, args.daemon, args.dry_run, args.add))):
        print("auto-gvpie: --auto goes with --once (the daemon proposes whenever it has a goal or roadmap)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.scores and not args.status:
        print("auto-gvpie: --scores goes with --status", file=sys.stderr)
        return EXIT_USAGE
    if args.samples is not None and not 1 <= args.samples <= 16:
        print("auto-gvpie: --samples must be between 1 and 16", file=sys.stderr)
        return EXIT_USAGE
    from auto_gvpie.architect import ArchitectError
    from auto_gvpie.jobqueue import QueueError
    from auto_gvpie.llm import LLMError, LLMUnreachable
    from auto_gvpie.sandbox import SandboxError
    from auto_gvpie.workspace import WorkspaceError
    if args.queue and not (args.daemon or args.worker or args.status):
        print("auto-gvpie: --queue goes with --daemon (dispatch) or --worker (run tasks)", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = _settings(args)
        writes = not (args.status or args.dry_run or args.add or args.cancel or args.serve or args.report)
        _setup_logging(settings if writes else None, args.verbose)
        if args.add:
            return cmd_add(args, settings)
        if args.cancel:
            return cmd_cancel(args, settings)
        if args.serve:
            return cmd_serve(args, settings)
        if args.report:
            return cmd_report(args, settings)
        if args.status:
            return cmd_status(args, settings)
        if args.dry_run:
            return cmd_dry_run(args, settings)
        if args.worker or (settings.queue and args.daemon):
            if not settings.queue:
                raise ConfigError("--worker needs --queue redis://HOST:PORT/DB")
            _require_queue_library()
            if args.daemon and (settings.goal or settings.roadmap):
                raise ConfigError("the architect (--goal, --roadmap) does not propose through a queue yet: run it "
                                  "without --queue, or queue tasks by hand")
        if args.worker:
            return cmd_worker(args, settings)
        if args.daemon:
            return cmd_daemon(args, settings)
        return cmd_once(args, settings)
    except (ConfigError, InboxError, WorkspaceError, SandboxError, ArchitectError, QueueError) as exc:
        print(f"auto-gvpie: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LLMUnreachable as exc:  # the daemon, or a model that cannot even be opened
        print(f"auto-gvpie: {exc}\nTasks were left pending.", file=sys.stderr)
        return EXIT_UNREACHABLE
    except LLMError as exc:
        print(f"auto-gvpie: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nauto-gvpie: interrupted; the running task went back to pending", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
