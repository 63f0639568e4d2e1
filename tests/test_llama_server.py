"""The bundled model served over the OpenAI wire format by llama-cpp-python's own server, on loopback,
answering Auto-GVPIE's HTTP client: the setup docs/local_model.md describes for other tools."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from auto_gvpie.config import load_settings
from auto_gvpie.llm.http import HttpLLM
from auto_gvpie.llm.model_files import INSTALL_HINT, PartsMissing, ensure_model

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

STARTUP_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra is not installed: pip install -e '.[server]'")
    settings = load_settings({"home": str(tmp_path_factory.mktemp("home"))})
    try:
        model = ensure_model(settings.model_cache)
    except PartsMissing:
        pytest.skip(f"the model's part packages are not installed: {INSTALL_HINT}")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown ends all of it
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                if requests.get(f"{url}/models", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within {STARTUP_SECONDS} s")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_http_client_gets_a_streamed_completion(server_url):
    llm = HttpLLM(server_url, context_window=4096)
    pieces = []
    done = llm.complete(
        [
            {"role": "system", "content": "You are a Python programmer. Answer with code only."},
            {"role": "user", "content": "Write a Python function add(a, b) that returns a + b."},
        ],
        max_tokens=200,
        on_token=pieces.append,
    )
    assert "def add(" in done.text
    assert "".join(pieces).strip() == done.text.strip()
    assert done.finish_reason == "stop"
    assert done.first_token_seconds is not None and done.first_token_seconds <= done.seconds


def test_http_client_gets_schema_constrained_json(server_url):
    llm = HttpLLM(server_url, context_window=4096)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "count": {"type": "integer"}},
        "required": ["name", "count"],
        "additionalProperties": False,
    }
    done = llm.complete(
        [{"role": "user", "content": "Give JSON for a crate named 'box' holding 3 items."}],
        json_schema=schema,
        max_tokens=100,
    )
    data = json.loads(done.text)
    assert set(data) == {"name", "count"} and isinstance(data["count"], int)


def test_the_worker_fixes_a_task_through_the_server_end_to_end(server_url, tmp_path):
    from conftest import make_repo, run_cli, write_tasks
    from test_engine import FIX_TASK

    repo = make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a - b\n",
                                         "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"})
    home = tmp_path / "home"
    home.mkdir()
    write_tasks(home, [{**FIX_TASK, "description": "add(a, b) must return the sum a + b."},
                       {"id": "box", "title": "Draw a green square on black", "kind": "pixel",
                        "description": "A 16x16 canvas, black background, a green filled square from (4,4) to (11,11)."}])
    out = run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server_url, "--no-memory", "--once", "--json",
                  timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {t["id"]: t["status"] for t in json.loads(out.stdout)["tasks"]} == {"fix-add": "done", "box": "done"}
    assert "a + b" in (repo / "calc.py").read_text()
    assert (home / "artifacts" / "box.png").exists()
