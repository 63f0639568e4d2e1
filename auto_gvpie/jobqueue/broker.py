"""Redis and RQ as this project uses them: the connection, the queue, the protocol handshake and
the workers' heartbeats (what `--status` shows). Imported only with `--queue` or `--worker`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from auto_gvpie.jobqueue import PROTOCOL, ProtocolMismatch, QueueError

log = logging.getLogger(__name__)

PROTOCOL_KEY = "gvpie:protocol"  # set by the dispatcher: the protocol its jobs are in
WORKER_KEY = "gvpie:worker:"  # + worker name: its heartbeat (a hash with a time to live)
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def connect(url: str) -> redis.Redis:
    """A client for `redis://HOST:PORT/DB`; it reconnects by itself after Redis restarts."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise QueueError(f"--queue: expected redis://HOST:PORT/DB, got {url!r}")
    # Timeouts keep a dead Redis from hanging the dispatcher; RQ raises the socket timeout above
    # its blocking pop's wait for its own connection.
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=15)


def ping(conn: redis.Redis, url: str) -> None:
    try:
        conn.ping()
    except REDIS_DOWN as exc:
        raise QueueError(f"cannot reach Redis at {url}: {exc}") from None


def work_queue(conn: redis.Redis) -> Queue:
    # JSON, not pickle: a job crosses machines and versions, and unpickling runs code.
    return Queue(f"gvpie-p{PROTOCOL}", connection=conn, serializer=JSONSerializer)


def publish_protocol(conn: redis.Redis) -> None:
    conn.set(PROTOCOL_KEY, PROTOCOL)


def check_protocol(conn: redis.Redis, url: str) -> None:
    """Refuse to serve a dispatcher of another protocol (no dispatcher yet is fine: the queue's
    name keeps other protocols' jobs apart anyway)."""
    theirs = conn.get(PROTOCOL_KEY)
    if theirs is not None and int(theirs) != PROTOCOL:
        raise ProtocolMismatch(
            f"the dispatcher on {url} sends jobs in queue protocol {int(theirs)}, this worker speaks protocol "
            f"{PROTOCOL}; install the same auto-gvpie version on both machines")


@dataclass
class WorkerBeat:
    name: str
    host: str
    pid: int
    llm: str
    state: str  # idle | busy
    task: str  # the task being run, "" when idle
    beat: float  # when it was last heard from
    protocol: int = PROTOCOL


def beat(conn: redis.Redis, worker: WorkerBeat, ttl: int) -> None:
    """A worker's heartbeat: gone from Redis `ttl` seconds after the worker stops beating."""
    key = WORKER_KEY + worker.name
    with conn.pipeline() as pipe:
        pipe.hset(key, mapping={k: json.dumps(v) for k, v in asdict(worker).items()})
        pipe.expire(key, ttl)
        pipe.execute()


def forget(conn: redis.Redis, name: str) -> None:
    conn.delete(WORKER_KEY + name)


def workers(conn: redis.Redis) -> list[WorkerBeat]:
    found = []
    for key in sorted(conn.scan_iter(match=WORKER_KEY + "*", count=100)):
        data = conn.hgetall(key)
        try:
            found.append(WorkerBeat(**{k.decode(): json.loads(v) for k, v in data.items()}))
        except (TypeError, ValueError):
            continue  # a worker of another version: its fields differ
    return found


def status_lines(url: str) -> list[str]:
    """For --status on the dispatcher's home: the queue, and each worker with its heartbeat."""
    conn = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        queued = len(work_queue(conn))
        found = workers(conn)
    except REDIS_DOWN as exc:
        return [f"queue: {url}: Redis unreachable ({exc})"]
    lines = [f"queue: {url}: {queued} job(s) waiting, {len(found)} worker(s)"]
    now = time.time()
    for w in found:
        doing = f"running {w.task}" if w.task else "idle"
        lines.append(f"worker: {w.name} on {w.host} (pid {w.pid}), LLM {w.llm}: {doing},"
                     f" heartbeat {max(0, int(now - w.beat))} s ago")
    return lines
