"""LanceDB memory: real tables on disk, the real all-MiniLM-L6-v2, real processes for CLI and concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lancedb
import numpy as np
import pytest

from auto_gvpie import memory as memory_module
from auto_gvpie.inbox import Task
from auto_gvpie.memory import Memory
from auto_gvpie.state import AttemptRecord
from conftest import ROOT, run_cli, write_tasks
from llm_server import LLMServer

def remember(memory, task_id, title, kind, attempt, outcome, test_command, exit_code, seconds, error_lines,
             artifact_kind, artifact_path, answer) -> None:
    """One attempt row, written as the engine writes it."""
    memory.remember(AttemptRecord(Task(task_id, title, kind), attempt, outcome, answer=answer,
                                  test_command=test_command, exit_code=exit_code, error_lines=tuple(error_lines),
                                  total_seconds=seconds, artifact_kind=artifact_kind, artifact_path=artifact_path))


DIVISION = dict(task_id="fix-average", title="Fix crash in average() on an empty list", kind="code",
                description="stats.average([]) raises ZeroDivisionError; it should return 0.0 for an empty list")
PATCH = ("--- a/stats.py\n+++ b/stats.py\n@@ -1,2 +1,4 @@\n def average(xs):\n+    if not xs:\n"
         "+        return 0.0\n     return sum(xs) / len(xs)\n")
UNRELATED = [
    ("logo", "Draw a green GVPIE boot logo", "pixel", "64x64 canvas, black background, green border, the text GVPIE"),
    ("readme-fr", "Translate the README to French", "code", "documentation only, keep the code blocks"),
    ("http-retry", "Retry LLM requests on connection errors", "code", "the HTTP client should retry 3 times with backoff"),
    ("heart", "Render a red heart icon", "pixel", "16x16 heart shape in red"),
]


@pytest.fixture(scope="session", autouse=True)
def model():
    """The embedding model, loaded once for the whole session (every Memory in this process shares it)."""
    return memory_module.embedding_model()


def remember_division_fix(mem: Memory) -> None:
    """A task that failed once with a ZeroDivisionError, then passed, leaving a patch."""
    d = DIVISION
    remember(mem, d["task_id"], d["title"], d["kind"], 1, "tests_failed", "python -m pytest -q test_stats.py", 1,
                       2.5, ["E   ZeroDivisionError: division by zero", "FAILED test_stats.py::test_empty_average"],
                       "patch", "artifacts/fix-average.attempt-1.json", "stats.py\n```python\n...\n```")
    remember(mem, d["task_id"], d["title"], d["kind"], 2, "passed", "python -m pytest -q test_stats.py", 0, 1.9,
                       [], "patch", "artifacts/fix-average.attempt-2.json", "stats.py\n```python\n...\n```")
    remember(mem, d["task_id"], d["title"], d["kind"], 2, "patch_saved", None, None, 0.0, [], "patch",
                       "artifacts/fix-average.patch", PATCH)
    mem.record_task(d["task_id"], d["title"], d["kind"], d["description"], "done", 2, None)
    mem.flush()


def remember_unrelated(mem: Memory) -> None:
    for task_id, title, kind, description in UNRELATED:
        remember(mem, task_id, title, kind, 1, "passed", None, None, 1.0, [], kind, f"artifacts/{task_id}.json",
                           "{}")
        mem.record_task(task_id, title, kind, description, "done", 1, None)
    mem.flush()


def recall_median_fix(mem: Memory, task_id: str = "fix-median") -> str:
    return mem.recall(task_id, "Fix crash in median() on an empty list",
                      "stats.median([]) raises IndexError; an empty list should give None", "code")


def test_a_similar_task_recalls_the_outcome_the_error_and_the_patch(tmp_path):
    mem = Memory(tmp_path)
    remember_division_fix(mem)
    text = recall_median_fix(mem)
    assert text.startswith("## Relevant memory")
    assert DIVISION["title"] in text and "done after 2 attempts" in text
    assert "ZeroDivisionError: division by zero" in text and "tests_failed" in text
    assert "+    if not xs:" in text  # the patch that finally worked
    assert "attempt 2: passed" in text


def test_a_task_is_never_reminded_of_its_own_rows(tmp_path):
    mem = Memory(tmp_path)
    remember_division_fix(mem)
    d = DIVISION
    assert mem.recall(d["task_id"], d["title"], d["description"], d["kind"]) == ""


def test_unrelated_tasks_are_not_recalled_above_related_ones(tmp_path):
    mem = Memory(tmp_path)
    remember_unrelated(mem)
    remember_division_fix(mem)
    text = recall_median_fix(mem)
    assert DIVISION["title"] in text
    position = text.index(DIVISION["title"])
    for _id, title, _kind, _desc in UNRELATED:
        assert title not in text[:position]
    hits = mem.search("empty list crashes with division by zero", k=5)
    assert hits[0].task_id == DIVISION["task_id"]
    assert hits == sorted(hits, key=lambda h: -h.score)
    assert [h for h in hits if h.table == "tasks"][0].task_id == DIVISION["task_id"]


def test_nothing_relevant_recalls_nothing(tmp_path):
    mem = Memory(tmp_path)
    remember_unrelated(mem)
    assert mem.recall("copyright", "Update the copyright year in LICENSE", "2025 becomes 2026", "code") == ""
    assert Memory(tmp_path / "empty").recall("x", "anything", "at all", "code") == ""


def test_recall_keeps_to_its_token_budget(tmp_path):
    mem = Memory(tmp_path)
    d = DIVISION
    for n in range(3):  # three similar tasks with long errors and patches
        long_error = [f"E   ZeroDivisionError in frame {i}: " + "x" * 150 for i in range(8)]
        remember(mem, f"{d['task_id']}-{n}", f"{d['title']} ({n})", "code", 1, "tests_failed", "pytest -q", 1,
                           1.0, long_error, "patch", f"artifacts/{n}.patch", PATCH * 30)
        mem.record_task(f"{d['task_id']}-{n}", f"{d['title']} ({n})", "code", d["description"], "done", 1, None)
    mem.flush()
    for budget in (100, 300, 600):
        text = mem.recall("fix-median", "Fix crash in median() on an empty list", "median([]) raises IndexError",
                          "code", budget)
        assert "Relevant memory" in text, budget
        assert len(text) <= budget * memory_module.CHARS_PER_TOKEN + 2, (budget, len(text))


def test_memory_survives_a_restart(tmp_path):
    first = Memory(tmp_path)
    remember_division_fix(first)
    first.record_task("unflushed", "Written only on close", "code", "close() flushes", "failed", 1, "boom")
    first.close()
    again = Memory(tmp_path)
    assert again.available
    assert "ZeroDivisionError" in recall_median_fix(again)
    assert {h.task_id for h in again.search("Written only on close", k=3)} >= {"unflushed"}
    tables = again.stats()["tables"]
    assert (tables["tasks"]["rows"], tables["runs"]["rows"], tables["artifacts"]["rows"]) == (2, 3, 3)


def test_latest_artifact_is_the_newest_of_its_kind(tmp_path):
    mem = Memory(tmp_path)
    assert mem.latest_artifact("pixel") is None
    for n in (1, 2):
        remember(mem, f"art-{n}", f"Picture {n}", "pixel", 1, "passed", None, None, 0.1, [], "pixel",
                           f"artifacts/art-{n}.json", '{"kind": "pixel_program"}')
        mem.flush()
        time.sleep(0.01)
    remember(mem, "code-1", "Code", "code", 1, "passed", None, None, 0.1, [], "patch", "artifacts/code-1.patch",
                       PATCH)
    mem.flush()
    latest = mem.latest_artifact("pixel")
    assert latest["task_id"] == "art-2" and latest["path"] == "artifacts/art-2.json"
    assert latest["created_at"].endswith("+00:00")
    assert mem.latest_artifact("patch")["task_id"] == "code-1"


def test_many_small_flushes_are_compacted(tmp_path):
    mem = Memory(tmp_path)
    for n in range(memory_module.OPTIMIZE_SMALL_FRAGMENTS + 4):
        mem.record_task(f"t{n}", f"Task number {n}", "code", "a small task", "done", 1, None)
        mem.flush()
    tasks = mem.stats()["tables"]["tasks"]
    assert tasks["rows"] == memory_module.OPTIMIZE_SMALL_FRAGMENTS + 4
    assert tasks["fragments"] < memory_module.OPTIMIZE_SMALL_FRAGMENTS  # one per flush without compaction
    assert "FTS" in tasks["indices"]


def test_the_vector_index_is_built_when_it_pays_and_kept_whole(tmp_path):
    mem = Memory(tmp_path)
    assert mem.available
    runs = mem._tables["runs"]
    rng = np.random.default_rng(7)

    def add(n: int, start: int) -> None:
        vectors = rng.standard_normal((n, memory_module.EMBED_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        runs.add([{"task_id": f"bulk-{start + i}", "title": "bulk", "kind": "code", "attempt": 1, "outcome": "passed",
                   "duration_s": 0.0, "error_lines": "", "created_at": memory_module._now(), "text": "bulk row",
                   "vector": vectors[i]} for i in range(n)])

    add(memory_module.VECTOR_INDEX_MIN_ROWS - 1, 0)
    memory_module.housekeep("runs", runs)
    assert "IvfSq" not in mem.stats()["tables"]["runs"]["indices"]  # brute force is fine this small
    add(1, memory_module.VECTOR_INDEX_MIN_ROWS)
    memory_module.housekeep("runs", runs)
    assert "IvfSq" in mem.stats()["tables"]["runs"]["indices"]
    for round_ in range(memory_module.MAX_VECTOR_INDEX_SEGMENTS + 2):  # each optimize adds an index segment
        for n in range(memory_module.OPTIMIZE_SMALL_FRAGMENTS):
            add(1, 10_000 + round_ * 100 + n)
        memory_module.housekeep("runs", runs)
        (index,) = [i for i in runs.list_indices() if "vector" in i.columns]
        assert index.num_segments <= memory_module.MAX_VECTOR_INDEX_SEGMENTS + 1
        assert runs.stats()["fragment_stats"]["num_fragments"] <= memory_module.MAX_VECTOR_INDEX_SEGMENTS + 2
    remember_division_fix(mem)
    assert mem.search("division by zero on an empty list", k=1)[0].task_id == DIVISION["task_id"]


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from auto_gvpie.inbox import Task
    from auto_gvpie.memory import Memory, embed
    from auto_gvpie.state import AttemptRecord
    home, name, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    embed(["warm up the model before the race"])
    mem = Memory(home)
    assert mem.available, mem.problem
    (home / f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.01)
    for n in range(count):
        mem.remember(AttemptRecord(Task(f"{name}-{n}", f"{name} task {n}", "code"), 1, "tests_failed",
                                   answer="edit", test_command="pytest", exit_code=1, total_seconds=0.5,
                                   error_lines=(f"AssertionError in {name} {n}",), artifact_kind="answer",
                                   artifact_path=f"artifacts/{name}-{n}.json"))
        mem.record_task(f"{name}-{n}", f"{name} task {n}", "code", "concurrent writer", "failed", 1, "assert")
        mem.flush()
    mem.close()
    assert mem.problem == "closed"
""")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    count = 30  # past OPTIMIZE_SMALL_FRAGMENTS, so compactions race with appends too
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(count), str(go)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready-{n}").exists() for n in ("a", "b")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers), \
            [w.communicate() for w in writers if w.poll() is not None]
        time.sleep(0.05)
    go.touch()
    for writer in writers:
        _out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    db = lancedb.connect(tmp_path / "lancedb")
    expected = sorted(f"{name}-{n}" for name in ("a", "b") for n in range(count))
    for table in ("tasks", "runs", "artifacts"):
        assert sorted(db.open_table(table).to_arrow()["task_id"].to_pylist()) == expected, table


def garble(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            file.write_bytes(b"\x00garbage\xff" * 64)


def test_a_corrupt_store_is_reported_and_every_method_is_a_no_op(tmp_path):
    remember_division_fix(Memory(tmp_path))
    garble(tmp_path / "lancedb")
    mem = Memory(tmp_path)
    assert mem.available is False
    assert str(tmp_path / "lancedb") in mem.problem
    remember_division_fix(mem)  # record + flush: silently nothing
    assert recall_median_fix(mem) == ""
    assert mem.search("division") == []
    assert mem.latest_artifact("patch") is None
    assert mem.stats()["available"] is False
    assert mem.summary_line().startswith("memory: unavailable (cannot open")
    mem.close()


def test_a_store_that_is_a_file_is_reported(tmp_path):
    (tmp_path / "lancedb").write_text("not a directory")
    mem = Memory(tmp_path)
    assert not mem.available and "lancedb" in mem.problem
    assert mem.summary_line().startswith("memory: unavailable")


def test_disabled_memory_touches_nothing(tmp_path):
    mem = Memory(tmp_path, enabled=False)
    remember_division_fix(mem)
    assert not mem.available and mem.problem == "disabled"
    assert mem.summary_line() == "memory: disabled"
    assert not (tmp_path / "lancedb").exists()


def memory_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auto_gvpie.memory", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_cli_search_and_stats_end_to_end(tmp_path):
    mem = Memory(tmp_path)
    remember_unrelated(mem)
    remember_division_fix(mem)
    mem.close()
    out = memory_cli("search", "ZeroDivisionError on an empty list", "--k", "3", "--json", "--home", str(tmp_path))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["query"] == "ZeroDivisionError on an empty list" and len(report["hits"]) == 3
    assert report["hits"][0]["task_id"] == DIVISION["task_id"]
    assert set(report["hits"][0]) == {"table", "score", "task_id", "title", "outcome", "snippet"}
    out = memory_cli("search", "green boot logo", "--home", str(tmp_path))
    assert out.returncode == 0 and out.stdout.startswith("1. ") and "logo" in out.stdout.splitlines()[0]
    assert out.stderr == ""
    out = memory_cli("stats", "--json", "--home", str(tmp_path))
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert {n: t["rows"] for n, t in stats["tables"].items()} == {"tasks": 5, "runs": 7, "artifacts": 7}
    assert stats["bytes"] > 0 and all(t["versions"] >= 1 for t in stats["tables"].values())
    out = memory_cli("stats", "--home", str(tmp_path))
    assert out.returncode == 0 and "tasks" in out.stdout and "versions" in out.stdout


def test_cli_errors(tmp_path):
    out = memory_cli("search", "anything", "--home", str(tmp_path))
    assert out.returncode == 1 and "no memory at" in out.stderr
    out = memory_cli("search", "anything", "--k", "0", "--home", str(tmp_path))
    assert out.returncode == 2 and "--k" in out.stderr
    (tmp_path / "lancedb").mkdir()
    (tmp_path / "lancedb" / "tasks.lance").mkdir()
    (tmp_path / "lancedb" / "tasks.lance" / "_versions").mkdir()
    (tmp_path / "lancedb" / "tasks.lance" / "_versions" / "1.manifest").write_bytes(b"garbage" * 50)
    out = memory_cli("stats", "--home", str(tmp_path))
    assert out.returncode == 1 and "memory unavailable" in out.stderr


# -- through the worker: the real CLI, a real git repo, a real OpenAI-compatible server -----------------------------

WRONG = "calc.py\n```python\ndef add(a, b):\n    return a * b\n\n\ndef mul(a, b):\n    return a * b\n```\n"
FIX = "calc.py\n```python\ndef add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n```\n"


def worker(home: Path, repo: Path, url: str) -> subprocess.CompletedProcess:
    return run_cli("--home", str(home), "--repo", str(repo), "--llm-url", url, "--once", "--json")


def prompts_of(server: LLMServer) -> list[str]:
    return ["\n".join(m["content"] for m in r["messages"] if m["role"] == "user") for r in server.requests]


def test_the_workers_second_similar_task_is_prompted_with_the_first_ones_memory(home, repo):
    write_tasks(home, [{"id": "fix-add", "title": "Fix add() in calc.py", "kind": "code", "inputs": ["calc.py"],
                        "tests": ["python -m pytest -q test_calc.py"]}])
    with LLMServer([WRONG, FIX]) as server:
        out = worker(home, repo, server.url)
    assert out.returncode == 0, out.stderr
    assert "Relevant memory" not in prompts_of(server)[0]  # nothing to remember yet
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a + b", "a - b"))
    write_tasks(home, [{"id": "fix-add", "title": "Fix add() in calc.py", "status": "done"},
                       {"id": "fix-add-again", "title": "Fix the add() function in calc.py again", "kind": "code",
                        "inputs": ["calc.py"], "tests": ["python -m pytest -q test_calc.py"]}])
    with LLMServer([FIX]) as server:
        out = worker(home, repo, server.url)
    assert out.returncode == 0, out.stderr
    prompt = prompts_of(server)[0]
    assert "Relevant memory" in prompt and "Fix add() in calc.py" in prompt
    assert "done after 2 attempts" in prompt and "tests_failed" in prompt
    assert "assert" in prompt.split("Relevant memory", 1)[1]  # the first task's key error line
    status = run_cli("--home", str(home), "--status")
    assert "memory: 2 tasks" in status.stdout, status.stdout


def test_a_corrupt_store_does_not_stop_the_worker(home, repo):
    (home / "lancedb" / "tasks.lance" / "_versions").mkdir(parents=True)
    (home / "lancedb" / "tasks.lance" / "_versions" / "1.manifest").write_bytes(b"\x00garbage" * 100)
    write_tasks(home, [{"id": "fix-add", "title": "Fix add() in calc.py", "kind": "code", "inputs": ["calc.py"],
                        "tests": ["python -m pytest -q test_calc.py"]}])
    with LLMServer([FIX]) as server:
        out = worker(home, repo, server.url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["done"] == 1
    assert "memory disabled" in out.stderr
    status = run_cli("--home", str(home), "--status")
    assert "memory: unavailable (cannot open" in status.stdout, status.stdout
