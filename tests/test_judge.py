"""The judge (--judge): a review after the real check passed, through the real CLI, a real git repo
and scripted OpenAI-compatible servers on loopback (the worker's, and a second one for the judge)."""

from __future__ import annotations

import json

import pytest

from conftest import FIX, FIX_TASK, WRONG, git, run_cli, write_tasks
from llm_server import LLMServer

from auto_gvpie.judge import parse_verdict

# Passes the tests like FIX, written differently (so it is not taken for the same answer again).
FIX_TOO = "calc.py\n```python\ndef add(a, b):\n    return sum((a, b))\n\n\ndef mul(a, b):\n    return a * b\n```\n"


def verdict(score: int, *reasons: str) -> str:
    return json.dumps({"score": score, "reasons": list(reasons)})


def user_text(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")


def judged(home, repo, server_url, *extra):
    return run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server_url, "--no-memory",
                   "--judge", *extra, "--once", "--json")


def status(home) -> dict:
    out = run_cli("--home", str(home), "--status", "--json")
    assert out.returncode == 0, out.stderr
    return {t["id"]: t for t in json.loads(out.stdout)["tasks"]}


def test_a_verdict_is_validated():
    good = parse_verdict(verdict(7, "  the docstring  is stale "), 8)
    assert (good.score, good.reasons, good.passes) == (7, ("the docstring is stale",), False)
    assert parse_verdict(verdict(8), 8).passes
    assert parse_verdict("Here it is:\n```json\n" + verdict(9) + "\n```", 8).score == 9  # fenced, in prose
    for bad, why in (("{", "no JSON object"), ("[1]", "no JSON object"), ("", "it was empty"), (verdict(11), "score"),
                     (json.dumps({"score": True, "reasons": []}), "score"),
                     (json.dumps({"score": 5, "reasons": "x"}), "reasons")):
        with pytest.raises(ValueError, match=why):
            parse_verdict(bad, 8)


def test_below_the_threshold_the_reasons_are_fed_back_and_the_next_passing_answer_is_reviewed(home, repo):
    write_tasks(home, [FIX_TASK])
    replies = [FIX, verdict(5, "add() should say in a docstring that it adds"), FIX_TOO, verdict(9)]
    with LLMServer(replies) as server:
        out = judged(home, repo, server.url)
    assert out.returncode == 0, out.stderr
    (task,) = json.loads(out.stdout)["tasks"]
    assert task["status"] == "done" and task["attempts"] == 2
    review = server.requests[1]
    assert review["response_format"]["type"] == "json_schema"  # the verdict is schema-constrained
    assert "+    return a + b" in user_text(review) and "Fix add() in calc.py" in user_text(review)
    second = user_text(server.requests[2])
    assert "a review scored it 5/10 (it needs 8)" in second and "should say in a docstring" in second
    first = json.loads((home / "artifacts" / "fix-add.attempt-1.json").read_text())
    assert first["outcome"] == "judge_rejected" and first["judge"] == {
        "score": 5, "reasons": ["add() should say in a docstring that it adds"]}
    assert json.loads((home / "artifacts" / "fix-add.attempt-2.json").read_text())["judge"]["score"] == 9
    assert status(home)["fix-add"]["score"] == 9
    text = run_cli("--home", str(home), "--status")
    assert "review: fix-add: judge 9/10" in text.stdout
    assert "sum((a, b))" in (repo / "calc.py").read_text()  # the answer the judge accepted
    page = home / "report.html"
    assert run_cli("--home", str(home), "--report", "--html", str(page)).returncode == 0
    assert "Judge score: <b>5/10</b> — add() should say in a docstring that it adds" in page.read_text()


def test_when_no_answer_satisfies_the_judge_the_best_passing_one_is_kept(home, repo):
    write_tasks(home, [{**FIX_TASK, "max_attempts": 3}])
    replies = [FIX, verdict(6, "fine but terse"), WRONG, FIX_TOO, verdict(4, "odd use of sum()")]
    with LLMServer(replies) as server:
        out = judged(home, repo, server.url)
    assert out.returncode == 0, out.stderr
    (task,) = json.loads(out.stdout)["tasks"]
    assert task["status"] == "done" and task["attempts"] == 3
    shown = run_cli("--home", str(home), "--status").stdout
    assert "review: fix-add: judge 6/10: fine but terse (below 8: kept attempt 1" in shown
    # Attempt 1's tree, not the last one's: the user's checkout gets the better-scored fix.
    assert "return a + b" in (repo / "calc.py").read_text()
    assert "return a + b" in (home / "artifacts" / "fix-add.patch").read_text()
    outcomes = [json.loads((home / "artifacts" / f"fix-add.attempt-{n}.json").read_text())["outcome"]
                for n in (1, 2, 3)]
    assert outcomes == ["judge_rejected", "tests_failed", "judge_rejected"]
    assert status(home)["fix-add"]["score"] == 6
    assert len(server.requests) == 5  # the failing attempt was never shown to the judge


def _picture(size: int, colour: str) -> str:
    program = {"kind": "pixel_program", "version": 1, "name": "dot", "canvas": {"width": size, "height": size},
               "palette": {"c": colour}, "ops": [{"op": "FILL", "color": "c"}]}
    return json.dumps(program)


def test_a_pixel_task_keeps_the_program_and_picture_of_the_best_scored_attempt(home):
    write_tasks(home, [{"id": "dot", "kind": "pixel", "title": "A small square picture", "max_attempts": 2}])
    replies = [_picture(8, "#ff0000"), verdict(7, "too small"), _picture(16, "#00ff00"), verdict(3, "wrong colour")]
    with LLMServer(replies) as server:
        out = run_cli("--home", str(home), "--llm-url", server.url, "--no-memory", "--judge", "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert "FILL" in user_text(server.requests[1]) and "luminance sketch" in user_text(server.requests[1])
    kept = json.loads((home / "artifacts" / "dot.json").read_text())
    assert kept["canvas"]["width"] == 8 and kept["palette"]["c"] == "#ff0000"
    from PIL import Image
    with Image.open(home / "artifacts" / "dot.png") as png:
        assert png.size == (8, 8)
    assert status(home)["dot"]["score"] == 7


def test_an_unusable_verdict_leaves_the_result_to_its_checks(home, repo):
    write_tasks(home, [FIX_TASK])
    with LLMServer([FIX, "I think it is good!"]) as server:
        out = judged(home, repo, server.url)
    assert out.returncode == 0, out.stderr
    (task,) = json.loads(out.stdout)["tasks"]
    assert task["status"] == "done" and task["attempts"] == 1
    assert "judge's answer on fix-add unusable" in out.stderr
    assert status(home)["fix-add"]["score"] is None


def test_a_second_server_judges_and_the_threshold_is_configurable(home, repo):
    write_tasks(home, [FIX_TASK])
    (home / "gvpie.toml").write_text("judge_threshold = 6\n")
    with LLMServer([FIX]) as worker, LLMServer([verdict(6, "acceptable")]) as judge:
        out = judged(home, repo, worker.url, "--judge-url", judge.url)
    assert out.returncode == 0, out.stderr
    assert len(worker.requests) == 1 and len(judge.requests) == 1
    assert "Fix add() in calc.py" in user_text(judge.requests[0])
    assert status(home)["fix-add"]["score"] == 6
    assert "+    return a + b" in git(repo, "diff")


def test_a_threshold_outside_0_to_10_is_a_usage_error(home, repo):
    write_tasks(home, [FIX_TASK])
    out = run_cli("--home", str(home), "--repo", str(repo), "--judge", "--judge-threshold", "11", "--once")
    assert out.returncode == 2 and "judge_threshold" in out.stderr
