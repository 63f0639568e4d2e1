"""Several candidate answers per attempt (`--samples N`), each tried on the same tree, checked by the
tests: the real CLI, a real repository, the scripted loopback LLM (issue 11, item 4)."""

from __future__ import annotations

import json
import shutil
import threading
import time

from conftest import FIX, FIX_TASK, WRONG, git, run_cli, write_tasks
from llm_server import LLMServer

WRONG2 = "calc.py\n```python\ndef add(a, b):\n    return b - a\n\n\ndef mul(a, b):\n    return a * b\n```\n"
NO_EDIT = "I think the bug is in add()."
PIXEL = ('{"kind": "pixel_program", "version": 1, "name": "box", "canvas": {"width": 8, "height": 8},'
         ' "ops": [{"op": "FILL", "color": [0, 0, 255]}]}')


def cli(home, repo, url, *args, env=None):
    return run_cli("--home", str(home), "--repo", str(repo), "--llm-url", url, "--no-memory", "--once", "--json",
                   *args, env=env)


def test_the_candidate_that_passes_wins_and_repeats_are_tried_once(home, repo):
    write_tasks(home, [{**FIX_TASK, "max_attempts": 1}])
    with LLMServer([WRONG, WRONG, FIX]) as server:
        out = cli(home, repo, server.url, "--samples", "3")
        seeds = [r.get("seed") for r in server.requests]
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"][0]["attempts"] == 1  # one attempt, three samples
    assert seeds == [None, 1, 2]
    patch = (home / "artifacts" / "fix-add.patch").read_text()
    assert "+    return a + b" in patch and "a * b\n+" not in patch  # nothing left of the failed candidate
    assert "return a + b" in (repo / "calc.py").read_text()


def test_when_none_passes_the_most_promising_is_fed_back_and_kept(home, repo):
    write_tasks(home, [{**FIX_TASK, "max_attempts": 2}])
    with LLMServer([NO_EDIT, WRONG2, FIX, FIX]) as server:
        out = cli(home, repo, server.url, "--samples", "2")
        second = "\n".join(m["content"] for m in server.requests[2]["messages"] if m["role"] == "user")
    assert out.returncode == 0, out.stderr
    first = json.loads((home / "artifacts" / "fix-add.attempt-1.json").read_text())
    assert first["outcome"] == "tests_failed"  # the candidate whose edit applied, over the one without an edit
    assert "return b - a" in second  # the next attempt starts from the kept candidate's tree
    assert "return a + b" in (repo / "calc.py").read_text()


def test_pixel_candidates_take_the_first_valid_program(home, repo):
    write_tasks(home, [{"id": "box", "title": "Draw a blue box", "kind": "pixel", "max_attempts": 1}])
    with LLMServer(['{"kind": "pixel_program"}', PIXEL]) as server:
        out = cli(home, repo, server.url, "--samples", "2")
        assert len(server.requests) == 2
    assert out.returncode == 0, out.stderr
    assert (home / "artifacts" / "box.png").exists()


def test_samples_out_of_range_is_a_usage_error(home, repo):
    out = run_cli("--home", str(home), "--once", "--samples", "0")
    assert out.returncode == 2 and "--samples must be between 1 and 16" in out.stderr


def test_with_several_server_slots_the_samples_are_asked_at_once_and_tried_in_order(home, repo):
    write_tasks(home, [{**FIX_TASK, "max_attempts": 1}])
    lock, in_flight, most = threading.Lock(), [0], [0]

    def answer(body):  # held open a while, so requests sent at once overlap here
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.5)
        with lock:
            in_flight[0] -= 1
        return {None: WRONG, 1: FIX, 2: WRONG2}[body.get("seed")]

    for parallel, expected in (("1", 1), ("3", 3)):
        most[0] = 0
        shutil.rmtree(home / ".gvpie", ignore_errors=True)  # the same task again, from scratch
        with LLMServer(responder=answer) as server:
            out = cli(home, repo, server.url, "--samples", "3", env={"GVPIE_LLM_PARALLEL": parallel})
        assert out.returncode == 0, out.stderr
        assert most[0] == expected
        attempt = json.loads((home / "artifacts" / "fix-add.attempt-1.json").read_text())
        assert attempt["outcome"] == "passed" and "return a + b" in attempt["answer"]  # sample 2, not a later one
        git(repo, "checkout", "calc.py")
