"""Issue 10, end to end: what the worker must never trust (model answers, task files, inputs,
repositories, servers) and what it must never do to the user's files.

Everything here is real: the CLI in a fresh process, git repositories in tmp, the loopback
OpenAI server from llm_server.py, and the state on disk read back with `--status --json`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import CALC, FIX, FIX_TASK, ROOT, TEST_CALC, WRONG, git, make_repo, run_cli, write_tasks
from llm_server import LLMServer, Reply

FAST = {"GVPIE_LLM_RETRIES": "0", "GVPIE_LLM_TIMEOUT": "20", "GVPIE_MEMORY": "0"}

# A green box with a white border: what the 1 MB battery description asks, so the render report passes it.
PIXEL = ('```json\n{"kind": "pixel_program", "version": 1, "name": "box",'
         ' "canvas": {"width": 16, "height": 16}, "palette": {"fg": [0, 255, 0], "edge": [255, 255, 255]},'
         ' "ops": [{"op": "RECT", "x": 2, "y": 2, "width": 12, "height": 12, "color": "fg"},'
         ' {"op": "RECT", "x": 1, "y": 1, "width": 14, "height": 14, "color": "edge", "fill": false}]}\n```\n')

REPO_FILES = {"calc.py": CALC, "test_calc.py": TEST_CALC, ".gitignore": "__pycache__/\n"}
LOCATION = re.compile(r"auto_tasks\.json:\d+:\d+")


def cli(home: Path, *args: str, repo: Path | None = None, url: str | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    base = ["--home", str(home), "--no-memory"]
    if repo is not None:
        base += ["--repo", str(repo)]
    if url is not None:
        base += ["--llm-url", url]
    return run_cli(*base, *args, env={**FAST, **(env or {})}, timeout=timeout)


def status(home: Path, *extra: str) -> dict:
    out = run_cli("--home", str(home), "--status", "--json", *extra, env=FAST)
    assert out.returncode == 0, out.stderr
    return {t["id"]: t for t in json.loads(out.stdout)["tasks"]}


def attempt(home: Path, task_id: str, number: int) -> dict:
    return json.loads((home / "artifacts" / f"{task_id}.attempt-{number}.json").read_text())


def all_pending_untried(home: Path, ids: set[str] | None = None) -> None:
    tasks = status(home)
    if ids is not None:
        assert set(tasks) == ids
    assert tasks, "no task listed"
    assert {t["status"] for t in tasks.values()} == {"pending"}, tasks
    assert all(t["attempts"] == 0 for t in tasks.values()), tasks


# -- defect 2: the home is the repository; the service's own files are never edit targets -------------


def _evil_task(marker: Path) -> dict:
    return {"id": "evil", "title": "evil", "kind": "code", "tests": [f"touch {marker}"]}


def _answer_whole_tasks(original: str, marker: Path) -> str:
    tasks = json.loads(original) + [_evil_task(marker)]
    return FIX + "\nauto_tasks.json\n```json\n" + json.dumps(tasks, indent=2) + "\n```\n"


def _answer_search_replace_tasks(original: str, marker: Path) -> str:
    search = '    "max_attempts": 2\n  }\n]'
    assert original.count(search) == 1
    replace = '    "max_attempts": 2\n  },\n  ' + json.dumps(_evil_task(marker)) + "\n]"
    return FIX + f"\nauto_tasks.json\n```\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```\n"


def _answer_config(original: str, marker: Path) -> str:
    return FIX + ('\ngvpie.toml\n```\n<<<<<<< SEARCH\n=======\nedit_format = "udiff"\n'
                  'test_timeout = 1\n>>>>>>> REPLACE\n```\n')


def _answer_state_dir(original: str, marker: Path) -> str:
    return FIX + f"\n.gvpie/hooks/post-run.sh\n```bash\ntouch {marker}\n```\n"


@pytest.mark.parametrize("answer, target, own", [
    (_answer_whole_tasks, None, "auto_tasks.json"),
    (_answer_search_replace_tasks, None, "auto_tasks.json"),
    (_answer_config, "gvpie.toml", "gvpie.toml"),
    (_answer_state_dir, ".gvpie/hooks/post-run.sh", ".gvpie"),
], ids=["whole-file-auto_tasks", "search-replace-auto_tasks", "gvpie.toml", ".gvpie-dir"])
def test_answer_editing_the_services_own_files_is_refused_when_home_is_the_repo(tmp_path, answer, target, own):
    marker = tmp_path / "marker-evil-ran"
    tasks_text = json.dumps([{**FIX_TASK, "max_attempts": 2}], indent=2) + "\n"
    project = make_repo(tmp_path / "project", {**REPO_FILES, "auto_tasks.json": tasks_text})
    tasks_file = project / "auto_tasks.json"
    before = tasks_file.read_bytes()
    evil = answer(tasks_text, marker)
    # --sandbox off: were the evil task run, its `touch` must be able to leave the marker behind.
    with LLMServer([evil, FIX]) as server:
        out = cli(project, "--once", "--sandbox", "off", url=server.url)  # the default layout: no --repo
        requests = len(server.requests)
    assert out.returncode == 0, out.stdout + out.stderr
    first = attempt(project, "fix-add", 1)
    assert first["outcome"] == "refused", first
    assert own in first["feedback"] and "Auto-GVPIE's own" in first["feedback"], first["feedback"]
    assert attempt(project, "fix-add", 2)["outcome"] == "passed"
    # The user's inbox is exactly as committed, nothing new appeared, the evil task never ran.
    assert tasks_file.read_bytes() == before
    assert git(project, "status", "--porcelain", "--", "auto_tasks.json") == ""
    if target is not None:  # a file the answer tried to create
        assert not (project / target).exists()
    assert not marker.exists()
    assert requests == 2
    assert set(status(project)) == {"fix-add"}
    assert status(project)["fix-add"]["status"] == "done"
    assert "return a + b" in (project / "calc.py").read_text()  # the legitimate fix went through


# -- defect 3: inputs are confined to the repository ---------------------------------------------------


def test_inputs_outside_the_repository_never_reach_the_llm_and_are_reported(tmp_path, home):
    secret_text = "TOP-SECRET-7f3a9c0e"
    secret = tmp_path / "outside.txt"
    secret.write_text(secret_text + "\n")
    repo = make_repo(tmp_path / "w" / "repo", REPO_FILES)
    (repo / "link.txt").symlink_to(secret)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a link")
    assert (repo / "../../outside.txt").resolve() == secret.resolve()
    refused = [str(secret), "../../outside.txt", "link.txt"]
    write_tasks(home, [{**FIX_TASK, "inputs": [*refused, "calc.py"],
                        "tests": [f"cat {secret}", "python -m pytest -q test_calc.py"]}])
    with LLMServer([WRONG, FIX]) as server:
        out = cli(home, "--once", "--sandbox", "off", repo=repo, url=server.url)
        bodies = [json.dumps(body) for body in server.requests]
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(bodies) == 2
    for number, body in enumerate(bodies, 1):
        assert secret_text not in body, f"request {number} carries the secret"
    assert "def add(a, b)" in bodies[0]  # calc.py itself was shown
    warnings = status(home)["fix-add"]["warnings"]
    text = run_cli("--home", str(home), "--status", env=FAST).stdout
    for raw in refused:
        assert any(raw in w and "refused" in w for w in warnings), (raw, warnings)
        assert any(line.startswith("warning: fix-add:") and raw in line for line in text.splitlines()), (raw, text)
    assert len(warnings) == 3, warnings


# -- defect 4: a target repository that cannot be used is an input error ------------------------------


@pytest.mark.parametrize("problem, words", [
    ("missing", "does not exist"),
    ("not-a-repo", "not a git repository"),
    ("no-commits", "no commits"),
])
def test_unusable_repo_exits_2_leaves_tasks_pending_and_runs_once_fixed(tmp_path, home, problem, words):
    target = tmp_path / "target"
    if problem != "missing":
        target.mkdir()
        for rel, text in REPO_FILES.items():
            (target / rel).write_text(text)
    if problem == "no-commits":
        git(target, "init", "-q", "-b", "main")
    write_tasks(home, [FIX_TASK])
    with LLMServer(responder=lambda body: FIX) as server:
        out = cli(home, "--once", repo=target, url=server.url)
        assert out.returncode == 2, out.stdout + out.stderr
        assert words in out.stderr and str(target) in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        all_pending_untried(home, {"fix-add"})
        # The user repairs the repository: the task runs now (it was not marked anything).
        make_repo(target, REPO_FILES)
        out = cli(home, "--once", repo=target, url=server.url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nothing to do" not in out.stdout
    assert status(home)["fix-add"]["status"] == "done"
    assert "return a + b" in (target / "calc.py").read_text()


def test_llm_url_with_an_impossible_port_exits_2_and_tasks_stay_pending(home, repo):
    write_tasks(home, [FIX_TASK, {"id": "pic", "title": "draw a box", "kind": "pixel"}])
    out = cli(home, "--once", repo=repo, url="http://127.0.0.1:99999/v1")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "99999" in out.stderr and "Traceback" not in out.stderr
    all_pending_untried(home, {"fix-add", "pic"})


# -- defect 5: a server that answers only errors, or never answers, is unreachable ---------------------


THREE = [{"id": f"pic-{n}", "title": f"draw box number {n}", "kind": "pixel"} for n in (1, 2, 3)]


@pytest.mark.parametrize("where", ["every-path", "chat-only"])
def test_server_answering_500_to_everything_exits_3_with_its_message(home, where):
    """`every-path`: discovery fails too; `chat-only`: the model list answers, every completion is a 500."""
    write_tasks(home, THREE)
    said = "CUDA error: out of memory while loading the model"
    error = Reply(status=500, content=said)
    server = LLMServer(answer_all=error) if where == "every-path" else LLMServer(responder=lambda body: error)
    with server:
        out = cli(home, "--once", "--json", url=server.url, env={"GVPIE_LLM_RETRIES": "1"})
        assert server.hits, "the server was never asked"
    assert out.returncode == 3, out.stdout + out.stderr
    assert "500" in out.stderr and said in out.stderr, out.stderr
    assert json.loads(out.stdout)["processed"] == 0
    all_pending_untried(home, {"pic-1", "pic-2", "pic-3"})


def test_server_that_accepts_but_never_answers_exits_3_and_says_so(home):
    write_tasks(home, THREE)
    with LLMServer(answer_all=Reply(delay=120)) as server:
        out = cli(home, "--once", url=server.url, env={"GVPIE_LLM_TIMEOUT": "2"}, timeout=60)
        assert server.hits, "the server was never asked"
    assert out.returncode == 3, out.stdout + out.stderr
    assert "accepted the connection" in out.stderr and "did not answer" in out.stderr, out.stderr
    assert "start LM Studio" not in out.stderr
    all_pending_untried(home, {"pic-1", "pic-2", "pic-3"})


# -- defect 6: --repo pointing inside a repository -----------------------------------------------------


def test_repo_flag_pointing_at_a_subdirectory_exits_2_naming_the_root(tmp_path, home):
    mono = make_repo(tmp_path / "mono", {"sub/calc.py": CALC, "sub/test_calc.py": TEST_CALC,
                                         ".gitignore": "__pycache__/\n"})
    mine = mono / "sub" / "calc.py"
    mine.write_text("# my unsaved experiment\n" + CALC)
    before = mine.read_bytes()
    write_tasks(home, [FIX_TASK])
    with LLMServer(responder=lambda body: FIX) as server:
        out = cli(home, "--once", repo=mono / "sub", url=server.url)
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(mono.resolve()) in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert mine.read_bytes() == before
    assert git(mono, "status", "--porcelain") == " M sub/calc.py\n"
    all_pending_untried(home, {"fix-add"})


# -- defect 7: hostile task files, arguments and answers -------------------------------------------------


BAD_FILES = {
    "deep": b"[" * 100_000,
    "long-number": b'[\n  {"title": "x", "kind": "pixel", "priority": ' + b"7" * 5000 + b"}\n]\n",
    "lone-surrogate": b'[\n  {"title": "\\ud800", "kind": "pixel"}\n]\n',
}


@pytest.mark.parametrize("flags", [["--once"], ["--status"], ["--dry-run"], ["--status", "--json"]],
                         ids=lambda f: " ".join(f))
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_hostile_task_file_exits_2_with_a_location_and_is_left_alone(home, case, flags):
    tasks = home / "auto_tasks.json"
    tasks.write_bytes(BAD_FILES[case])
    with LLMServer(responder=lambda body: PIXEL) as server:
        out = cli(home, *flags, url=server.url)
        assert server.requests == []
    assert out.returncode == 2, out.stdout + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert LOCATION.search(out.stderr) or "[0].title" in out.stderr, out.stderr[-2000:]
    assert tasks.read_bytes() == BAD_FILES[case]


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_add_onto_a_hostile_task_file_exits_2_and_leaves_it_alone(home, case):
    tasks = home / "auto_tasks.json"
    tasks.write_bytes(BAD_FILES[case])
    out = run_cli("--home", str(home), "--add", "Draw a battery icon", "--kind", "pixel", env=FAST)
    assert out.returncode == 2, out.stdout + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert tasks.read_bytes() == BAD_FILES[case]


@pytest.mark.parametrize("flags", [["--once"], ["--status"], ["--dry-run"], ["--add", "draw a box"]],
                         ids=lambda f: f[0])
def test_tasks_flag_naming_a_directory_exits_2(home, tmp_path, flags):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    out = cli(home, "--tasks", str(folder), *flags, url="http://127.0.0.1:9/v1")
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(folder) in out.stderr and "directory" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_task_file_with_a_utf8_bom_is_accepted(home):
    tasks = home / "auto_tasks.json"
    data = b"\xef\xbb\xbf" + json.dumps([{"id": "bom-box", "title": "draw a box", "kind": "pixel"}]).encode() + b"\n"
    tasks.write_bytes(data)
    shown = run_cli("--home", str(home), "--status", env=FAST)
    assert shown.returncode == 0, shown.stderr
    assert "bom-box" in shown.stdout
    planned = run_cli("--home", str(home), "--dry-run", env=FAST)
    assert planned.returncode == 0 and "bom-box" in planned.stdout, planned.stdout + planned.stderr
    with LLMServer([PIXEL]) as server:
        out = cli(home, "--once", url=server.url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert status(home)["bom-box"]["status"] == "done"
    assert (home / "artifacts" / "bom-box.png").exists()
    assert tasks.read_bytes() == data


def test_add_with_a_title_that_is_not_utf8_exits_2_naming_the_title(home):
    tasks = write_tasks(home, [{"id": "keep", "title": "draw a box", "kind": "pixel"}])
    before = tasks.read_bytes()
    argv = [os.fsencode(sys.executable), os.fsencode(ROOT / "auto_gvpie" / "orchestrator.py"),
            b"--home", os.fsencode(home), b"--add", b"bad \xff title", b"--kind", b"pixel"]
    out = subprocess.run(argv, capture_output=True, env={**os.environ, **FAST}, timeout=60)
    stderr = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2, stderr
    assert "title" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert tasks.read_bytes() == before


DEEP_PIXEL = ('{"kind": "pixel_program", "version": 1, "name": "deep", "canvas": {"width": 8, "height": 8},'
              ' "ops": [{"op": "FILL", "color": [0, 0, 0]}], "metadata": {"x": ' + "[" * 100_000 + "]" * 100_000
              + "}}")
HUGE_COORDINATE = ('{"kind": "pixel_program", "version": 1, "name": "far", "canvas": {"width": 8, "height": 8},'
                   ' "ops": [{"op": "SET", "x": ' + "9" * 5000 + ', "y": 1, "color": [255, 0, 0]}]}')


@pytest.mark.parametrize("bad", [DEEP_PIXEL, HUGE_COORDINATE], ids=["nested-100000", "5000-digit-coordinate"])
def test_hostile_pixel_answer_is_an_invalid_program_and_retried(home, bad):
    write_tasks(home, [{"id": "pic", "title": "draw a box", "kind": "pixel", "max_attempts": 2}])
    with LLMServer([bad, PIXEL]) as server:
        out = cli(home, "--once", url=server.url)
        requests = len(server.requests)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "internal error" not in out.stdout + out.stderr
    assert requests == 2
    first = attempt(home, "pic", 1)
    assert first["outcome"] == "invalid_program", first["feedback"][:500]
    assert "internal error" not in first["feedback"]
    task = status(home)["pic"]
    assert task["status"] == "done" and task["attempts"] == 2, task
    assert (home / "artifacts" / "pic.png").exists()


# -- defect 8: tasks without an id -------------------------------------------------------------------------


SAME = json.dumps({"title": "draw a green box", "kind": "pixel"})


def test_identical_lines_each_run_and_a_third_runs_exactly_once_more(home):
    tasks = home / "auto_tasks.json"
    tasks.write_text(SAME + "\n" + SAME + "\n")
    with LLMServer(responder=lambda body: PIXEL) as server:
        out = cli(home, "--once", url=server.url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(server.requests) == 2
        first_ids = set(status(home))
        assert len(first_ids) == 2 and {t["status"] for t in status(home).values()} == {"done"}
        with open(tasks, "a") as handle:
            handle.write(SAME + "\n")
        out = cli(home, "--once", url=server.url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(server.requests) == 3
        out = cli(home, "--once", url=server.url)
        assert len(server.requests) == 3 and "nothing to do" in out.stdout
    after = status(home)
    assert len(after) == 3 and first_ids < set(after)
    assert {t["status"] for t in after.values()} == {"done"}


def test_deleting_or_editing_done_lines_without_id_runs_nothing(home):
    tasks = home / "auto_tasks.json"
    tasks.write_text(SAME + "\n" + SAME + "\n")
    with LLMServer(responder=lambda body: PIXEL) as server:
        out = cli(home, "--once", url=server.url)
        assert out.returncode == 0 and len(server.requests) == 2, out.stdout + out.stderr
        tasks.write_text(SAME + "\n")  # the user deletes the first line
        out = cli(home, "--once", url=server.url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "nothing to do" in out.stdout
        assert len(server.requests) == 2
        left = status(home)
        assert len(left) == 1 and [t["status"] for t in left.values()] == ["done"], left
        # Editing a done task's description (it has no id) does not make it a new task.
        tasks.write_text(json.dumps({"title": "draw a green box", "kind": "pixel",
                                     "description": "a bigger one, with a border"}) + "\n")
        out = cli(home, "--once", url=server.url)
        assert out.returncode == 0 and "nothing to do" in out.stdout, out.stdout + out.stderr
        assert len(server.requests) == 2
    edited = status(home)
    assert len(edited) == 1 and [t["status"] for t in edited.values()] == ["done"], edited


# -- the user's checkout in the middle of a merge ------------------------------------------------------


def test_patch_is_not_applied_to_a_checkout_in_the_middle_of_a_merge(tmp_path, home):
    repo = make_repo(tmp_path / "repo", {**REPO_FILES, "notes.txt": "base\n"})
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "notes.txt").write_text("theirs\n")
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "notes.txt").write_text("ours\n")
    git(repo, "commit", "-qam", "ours")
    merge = subprocess.run(["git", "-C", str(repo), "merge", "other"], capture_output=True, text=True)
    assert merge.returncode != 0 and (repo / ".git" / "MERGE_HEAD").exists(), merge.stdout + merge.stderr
    snapshot = {p.name: p.read_bytes() for p in repo.iterdir() if p.is_file()}
    write_tasks(home, [FIX_TASK])
    with LLMServer([FIX]) as server:
        out = cli(home, "--once", repo=repo, url=server.url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert status(home)["fix-add"]["status"] == "done"
    patch = home / "artifacts" / "fix-add.patch"
    assert patch.exists() and "+    return a + b" in patch.read_text()
    assert "middle of a merge" in out.stdout + out.stderr, out.stdout + out.stderr
    assert {p.name: p.read_bytes() for p in repo.iterdir() if p.is_file()} == snapshot
    assert (repo / ".git" / "MERGE_HEAD").exists()


# -- attempt files are capped --------------------------------------------------------------------------


def test_a_5_mb_answer_leaves_an_attempt_file_under_1_mb_with_head_and_tail(home, repo):
    write_tasks(home, [{**FIX_TASK, "max_attempts": 1}])
    huge = "HEADMARK-begin " + "y" * 5_000_000 + " TAILMARK-end"
    with LLMServer([huge]) as server:
        out = cli(home, "--once", repo=repo, url=server.url)
    assert out.returncode == 1, out.stdout + out.stderr[-2000:]
    path = home / "artifacts" / "fix-add.attempt-1.json"
    assert path.stat().st_size < 1_000_000, path.stat().st_size
    answer = json.loads(path.read_text())["answer"]
    assert answer.startswith("HEADMARK-begin") and answer.endswith("TAILMARK-end")


# -- the sandbox, via the CLI ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_sandbox_status_line_and_a_test_writing_to_home(tmp_path):
    marker = Path.home() / f".gvpie-sandbox-probe-{uuid.uuid4().hex}"
    task = {**FIX_TASK, "max_attempts": 1, "tests": ["python -m pytest -q test_calc.py", f"touch {marker}"]}
    homes = {mode: tmp_path / f"home-{mode}" for mode in ("auto", "off")}
    try:
        for mode, home in homes.items():
            home.mkdir()
            write_tasks(home, [task])
        shown = run_cli("--home", str(homes["auto"]), "--status", env=FAST).stdout
        assert any(line.startswith("sandbox: on") for line in shown.splitlines()), shown
        shown = run_cli("--home", str(homes["off"]), "--status", "--sandbox", "off", env=FAST).stdout
        assert any(line.startswith("sandbox: off") for line in shown.splitlines()), shown

        repo = make_repo(tmp_path / "repo-auto", REPO_FILES)
        with LLMServer([FIX]) as server:
            out = cli(homes["auto"], "--once", repo=repo, url=server.url)  # the default: --sandbox auto
        assert out.returncode == 1, out.stdout + out.stderr
        assert not marker.exists(), "a sandboxed test command wrote to $HOME"
        assert status(homes["auto"])["fix-add"]["status"] == "failed"
        assert "touch" in (status(homes["auto"])["fix-add"]["error"] or "")

        repo = make_repo(tmp_path / "repo-off", REPO_FILES)
        with LLMServer([FIX]) as server:
            out = cli(homes["off"], "--once", "--sandbox", "off", repo=repo, url=server.url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert marker.exists()
        assert status(homes["off"])["fix-add"]["status"] == "done"
    finally:
        marker.unlink(missing_ok=True)


# -- a huge task description fits the context the server reports -------------------------------------


@pytest.mark.parametrize("kind", ["pixel", "code"])
def test_a_1_mb_description_is_fitted_to_the_servers_context(home, repo, kind):
    context = 4096
    description = ("Draw a battery icon with a green charge level and a thin white border. " * 15_000)[:1_000_000]
    assert len(description) == 1_000_000
    if kind == "pixel":
        task, answer = {"id": "big", "title": "draw a battery icon", "kind": "pixel"}, PIXEL
    else:
        task, answer = {**FIX_TASK, "id": "big"}, FIX
    write_tasks(home, [{**task, "description": description}])
    with LLMServer([answer], context_length=context) as server:
        out = cli(home, "--once", repo=repo, url=server.url)
        requests = list(server.requests)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert len(requests) == 1
    chars = sum(len(m["content"]) for m in requests[0]["messages"])
    assert chars < context * 4, chars
    assert "battery icon" in requests[0]["messages"][-1]["content"]
