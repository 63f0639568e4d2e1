"""How often the loop finishes real tasks with the bundled local model (Qwen2.5-Coder-1.5B, Q4_K_M).

Runs the suite in bench/agent_tasks.py through the real engine (worktrees, edits,
tests) with the embedded model, in three configurations:
  memory off, max_attempts 3   (the default loop)
  memory on,  max_attempts 3   (LanceDB recall; tasks run in order, so later ones can recall earlier ones)
  memory off, max_attempts 1   (no retry: the baseline the retry loop is measured against)
and reports tasks solved, attempts per solved task, well-formed edit rate, refused
edits and wall time per task, plus model load time and tokens/s.

    .venv/bin/python bench/agent_bench.py [--only NAME ...] [--configs off3,on3,off1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from agent_tasks import SUITE, BenchTask  # noqa: E402
from auto_gvpie.config import load_settings  # noqa: E402
from auto_gvpie.engine import Engine  # noqa: E402
from auto_gvpie.llm import open_llm  # noqa: E402
from auto_gvpie.memory import Memory  # noqa: E402
from auto_gvpie.inbox import parse_inbox  # noqa: E402
from auto_gvpie.state import StateStore  # noqa: E402
from bench_report import machine, write_section  # noqa: E402
from conftest import make_repo  # noqa: E402

CONFIGS = {"off3": (False, 3), "on3": (True, 3), "off1": (False, 1)}


def run_config(llm, name: str, tasks: list[BenchTask], workdir: Path) -> list[dict]:
    memory_on, max_attempts = CONFIGS[name]
    home = workdir / name
    home.mkdir()
    memory = Memory(home, enabled=memory_on)
    results = []
    for task in tasks:
        repo = make_repo(workdir / f"{name}-{task.name}", task.files)
        entry = {"id": task.name, "title": task.title, "description": task.description, "kind": "code",
                 "inputs": list(task.inputs), "tests": list(task.tests), "max_attempts": max_attempts}
        (home / "auto_tasks.json").write_text(json.dumps([entry]))
        settings = load_settings({"home": str(home), "repo": str(repo), "llm": "embedded", "memory": memory_on,
                                  "apply": "none"}, env={"GVPIE_TEST_TIMEOUT": "300"})
        store = StateStore(settings.state_dir)
        (inbox_task,) = parse_inbox(json.dumps([entry]))
        store.sync([inbox_task])
        engine = Engine(settings, store, llm, memory, owner="bench")
        started = time.monotonic()
        outcome = engine.run_task(inbox_task)
        wall = time.monotonic() - started
        runs = store.runs(task.name)
        outcomes = [r["outcome"] for r in runs]
        results.append({"task": task.name, "language": task.language, "solved": outcome.status == "done",
                        "attempts": outcome.attempts, "outcomes": outcomes, "wall_s": wall,
                        "llm_s": sum(r["llm_seconds"] for r in runs)})
        print(f"  [{name}] {task.name:16s} {'SOLVED' if outcome.status == 'done' else 'failed':6s} "
              f"attempts={outcome.attempts} {outcomes} {wall:.1f}s", flush=True)
        store.close()
    memory.close()
    return results


def summarise(results: list[dict]) -> dict:
    attempts = [o for r in results for o in r["outcomes"]]
    solved = [r for r in results if r["solved"]]
    well_formed = sum(o in ("passed", "tests_failed") for o in attempts)
    return {
        "solved": len(solved), "total": len(results),
        "attempts_per_solved": statistics.mean(r["attempts"] for r in solved) if solved else float("nan"),
        "well_formed": well_formed / len(attempts) if attempts else 0.0,
        "refused": sum(o == "refused" for o in attempts), "attempts": len(attempts),
        "bad_answers": sum(o == "bad_answer" for o in attempts),
        "wall_median": statistics.median(r["wall_s"] for r in results),
        "py": sum(r["solved"] for r in results if r["language"] == "python"),
        "py_total": sum(r["language"] == "python" for r in results),
        "rs": sum(r["solved"] for r in results if r["language"] == "rust"),
        "rs_total": sum(r["language"] == "rust" for r in results),
    }


def model_numbers(llm) -> tuple[float, float]:
    """Load time, then tokens/s on a fixed short generation."""
    started = time.monotonic()
    llm.count_tokens("warm up")  # loads the model
    load = time.monotonic() - started
    completion = llm.complete([{"role": "user", "content": "Write a Python function that returns the n-th "
                                "Fibonacci number, with a docstring."}], max_tokens=1024)
    return load, (completion.completion_tokens or 0) / completion.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="task names to run (default: the whole suite)")
    parser.add_argument("--configs", default="off3,on3,off1")
    parser.add_argument("--keep", metavar="DIR", help="keep homes and repositories (attempt records) in DIR")
    args = parser.parse_args()
    tasks = [t for t in SUITE if not args.only or t.name in args.only]
    configs = args.configs.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        settings = load_settings({"home": tmp, "llm": "embedded"})
        llm = open_llm(settings)
        load_s, tokens_s = model_numbers(llm)
        print(f"model: loaded in {load_s:.1f} s, {tokens_s:.1f} tokens/s", flush=True)
        summaries = {name: summarise(run_config(llm, name, tasks, Path(tmp))) for name in configs}
    labels = {"off3": "memory off, max_attempts 3", "on3": "memory on, max_attempts 3",
              "off1": "memory off, max_attempts 1"}
    rows = [f"| {labels[n]} | {s['solved']}/{s['total']} (Python {s['py']}/{s['py_total']}, Rust {s['rs']}/{s['rs_total']}) | "
            f"{s['attempts_per_solved']:.2f} | {s['well_formed']:.0%} ({s['attempts']} attempts) | {s['refused']} | "
            f"{s['bad_answers']} | {s['wall_median']:.1f} |" for n, s in summaries.items()]
    ratios = []
    if "off3" in summaries and "off1" in summaries and summaries["off1"]["solved"]:
        ratios.append(f"Retry loop: {summaries['off3']['solved']} solved with 3 attempts vs "
                      f"{summaries['off1']['solved']} with 1 ({summaries['off3']['solved'] / summaries['off1']['solved']:.2f}×).")
    if "off3" in summaries and "on3" in summaries:
        ratios.append(f"Memory: {summaries['on3']['solved']} solved with memory vs {summaries['off3']['solved']} without.")
    body = "\n".join([
        f"Machine: {machine()}; {date.today().isoformat()}. Command: `.venv/bin/python bench/agent_bench.py"
        f"{' --configs ' + args.configs if args.configs != 'off3,on3,off1' else ''}`.",
        "",
        f"Model: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, in-process (llama-cpp-python, temperature 0.2, seed derived from the prompt): "
        f"load {load_s:.1f} s, {tokens_s:.1f} tokens/s generating.",
        f"Suite: {len(tasks)} tasks from `bench/agent_tasks.py` ({sum(t.language == 'python' for t in tasks)} Python, "
        f"{sum(t.language == 'rust' for t in tasks)} Rust); each test fails before and passes on the reference "
        "(checked by tests/test_agent_tasks.py). Edit format: auto (whole files for these small inputs).",
        "",
        "| configuration | solved | attempts per solved task | well-formed edits | refused edits | unusable answers | median wall s per task |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *ratios,
        "",
        "Prompt changes judged by this benchmark (2026-11-27, same machine): with the whole-file format shown on the "
        "real file as its example and no test output before the first attempt, the first configuration failed "
        "fizzbuzz and roman three times each by sending the file back unchanged (refused as no-ops); showing a "
        "placeholder instead of the file and the failing test output from the first attempt on solved both on the "
        "first attempt. The remaining failure (slugify) is a wrong regex, then the same file resent. The same "
        "prompt does not always give the same first answer across runs (fizzbuzz passed on attempt 1 in one "
        "configuration and was refused in another), so single-task differences of one are noise.",
    ])
    write_section("agent_bench", "Agent benchmark with the bundled model (issue 7)", body)
    print(body)


if __name__ == "__main__":
    main()
