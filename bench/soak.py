"""The soak (issue 12): the daemon left alone with a goal and a three-milestone roadmap on a small
repository, with the bundled model (or --llm-url), the judge on, for --minutes.

It builds the repository (two milestones have failing tests, the third has none yet), starts
`--daemon --goal --roadmap --judge`, samples `--status --json` and `--status --scores --json`
every --sample seconds, stops the daemon with SIGTERM, then reports: proposals made, queued,
discarded (and why), tasks done/failed, judge scores, the trainer's difficulty over time, the
repository's own tests at the end, and whether anything was lost (every queued task has a final
state or is still pending; every done code task left a patch; the roadmap is unchanged).

    .venv/bin/python bench/soak.py [--minutes 30] [--llm-url URL] [--out bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py")]

FILES = {
    "textkit.py": '''"""Small text helpers."""


def slugify(text):
    """'Hello World' -> 'hello-world'."""
    return text.replace(" ", "_")


def word_count(text):
    """The number of words, separated by any whitespace."""
    return len(text.split(" "))
''',
    "test_textkit.py": '''from textkit import slugify, word_count


def test_slugify_lowercases_and_joins_with_dashes():
    assert slugify("Hello World") == "hello-world"


def test_slugify_collapses_spaces():
    assert slugify("  Many   spaces here ") == "many-spaces-here"


def test_word_count_any_whitespace():
    assert word_count("one  two\\nthree\\tfour") == 4


def test_word_count_empty():
    assert word_count("") == 0
''',
    "README.md": "# textkit\n\nSmall text helpers: slugify, word_count.\n",
    ".gitignore": "__pycache__/\n",
}
ROADMAP = """# textkit roadmap
- [ ] slugify() lowercases, trims and joins words with single dashes (test_textkit.py)
- [ ] word_count() counts words separated by any whitespace, 0 for empty text (test_textkit.py)
- [ ] a title_case() function that capitalises each word, with tests in test_title.py
"""
GOAL = "make textkit's helpers correct and complete, one small tested step at a time"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def cli(home: Path, *args: str) -> dict:
    out = subprocess.run([*CLI, "--home", str(home), *args, "--json"], capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr[-500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--sample", type=float, default=60)
    ap.add_argument("--llm-url")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gvpie-soak-"))
    home, repo = work / "home", work / "textkit"
    home.mkdir()
    repo.mkdir()
    for name, text in FILES.items():
        (repo / name).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=soak", "-c", "user.email=soak@localhost", "commit", "-qm", "textkit")
    roadmap = work / "ROADMAP.md"
    roadmap.write_text(ROADMAP)
    (home / "auto_tasks.json").write_text("[]\n")
    llm = ["--llm-url", args.llm_url] if args.llm_url else ["--llm", "embedded"]
    started = time.time()
    log = open(work / "daemon.log", "w")
    daemon = subprocess.Popen([*CLI, "--home", str(home), "--repo", str(repo), *llm, "--daemon", "--goal", GOAL,
                               "--roadmap", str(roadmap), "--judge", "--interval", "30"],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    samples = []
    try:
        while time.time() - started < args.minutes * 60:
            time.sleep(args.sample)
            status, scores = cli(home, "--status"), cli(home, "--status", "--scores")
            samples.append({"t_s": round(time.time() - started), "counts": status.get("counts"),
                            "difficulty": scores.get("difficulty"), "trend": (scores.get("trend") or [None])[-1]})
            print(f"[{samples[-1]['t_s']:>5} s] {samples[-1]['counts']} next task: {samples[-1]['difficulty']}",
                  file=sys.stderr, flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=300)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    status, scores = cli(home, "--status"), cli(home, "--status", "--scores")
    books = json.loads((home / ".gvpie" / "architect.json").read_text()) if (home / ".gvpie" / "architect.json").exists() else {}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=repo, capture_output=True, text=True)
    inbox = [json.loads(l) for l in (home / "auto_tasks.json").read_text().splitlines() if l.startswith("{")]
    states = {t["id"]: t for t in status.get("tasks", [])}
    lost = [t["title"] for t in inbox if not any(s["title"] == t["title"] for s in states.values())]
    unpatched = [i for i, s in states.items() if s["status"] == "done"
                 and not (home / "artifacts" / f"{i}.patch").exists()]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "minutes": args.minutes, "llm": args.llm_url or "embedded (Qwen2.5-Coder-1.5B Q4_K_M)",
        "command": " ".join(sys.argv), "work_dir": str(work),
        "proposals": {"iterations": books.get("iterations"), "queued": books.get("queued"),
                      "discarded": books.get("discarded"), "stopped": books.get("stopped"),
                      "milestones": books.get("milestones"), "last_steps": books.get("log")},
        "tasks": status.get("counts"), "judge_scores": {i: s.get("score") for i, s in states.items()},
        "scores": scores.get("tasks"), "difficulty_over_time": samples,
        "repo_tests_at_end": {"exit_code": tests.returncode, "summary": tests.stdout.strip().splitlines()[-1:]},
        "nothing_lost": {"inbox_tasks": len(inbox), "without_state": lost, "done_without_patch": unpatched,
                         "roadmap_unchanged": roadmap.read_text() == ROADMAP,
                         "git_log": git(repo, "log", "--oneline").splitlines()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("proposals", "tasks", "judge_scores", "repo_tests_at_end",
                                               "nothing_lost")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
