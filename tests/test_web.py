"""The dashboard and the morning report, end to end: a home filled by a scripted run of the real
CLI, the real server (`auto-gvpie --serve`, uvicorn) on a loopback port, and a real browser
(Debian's chromium, headless, driven by Selenium through chromium-driver).

Screenshots of the gallery and of a task page are saved under the test's tmp dir; with
GVPIE_SCREENSHOTS=docs/img they are also written there (how the README's pictures are made).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import CALC, FIX, ROOT, TEST_CALC, WRONG, make_repo, run_cli, write_tasks
from llm_server import LLMServer, Reply

from auto_gvpie.inbox import read_inbox

MADE_UP = ("calc.py\n```\n<<<<<<< SEARCH\ndef add(x, y):\n    return x - y\n=======\ndef add(x, y):\n"
           "    return x + y\n>>>>>>> REPLACE\n```\n")
WRONG2 = "calc.py\n```python\ndef add(a, b):\n    return b - a\n\n\ndef mul(a, b):\n    return a * b\n```\n"
PIXEL = ('```json\n{"kind": "pixel_program", "version": 1, "name": "boot_screen",'
         ' "canvas": {"width": 16, "height": 16}, "palette": {"bg": [10, 20, 60], "fg": [0, 255, 120]},'
         ' "ops": [{"op": "FILL", "color": "bg"}, {"op": "RECT", "x": 2, "y": 2, "width": 12, "height": 12,'
         ' "color": "fg", "fill": false}, {"op": "CIRCLE", "cx": 8, "cy": 8, "r": 3, "color": "#ffcc00"}]}\n```')
SMILEY = ('```json\n{"kind": "pixel_program", "version": 1, "name": "smiley",'
          ' "canvas": {"width": 32, "height": 32}, "palette": {"face": "#ffd43b", "ink": [30, 30, 30]},'
          ' "ops": [{"op": "FILL", "color": [240, 240, 255]}, {"op": "CIRCLE", "cx": 16, "cy": 12, "r": 11,'
          ' "color": "face"}, {"op": "RECT", "x": 11, "y": 7, "width": 3, "height": 4, "color": "ink"},'
          ' {"op": "RECT", "x": 19, "y": 7, "width": 3, "height": 4, "color": "ink"},'
          ' {"op": "LINE", "x1": 10, "y1": 16, "x2": 22, "y2": 16, "color": "ink"},'
          ' {"op": "WRITE_TEXT", "x": 8, "y": 24, "text": "OK", "color": "ink"}]}\n```')
TASKS = [
    {"id": "fix-add", "title": "Fix add() in calc.py", "kind": "code", "inputs": ["calc.py"],
     "tests": ["python -m pytest -q test_calc.py"], "priority": 9, "max_attempts": 2},
    {"id": "swap-add", "title": "Make add() commutative-safe", "kind": "code", "inputs": ["calc.py"],
     "tests": ["python -m pytest -q test_calc.py"], "priority": 8, "max_attempts": 2},
    {"id": "boot-screen", "title": "Draw a boot screen icon", "kind": "pixel", "priority": 7},
    {"id": "smiley", "title": "Draw a smiley that says OK", "kind": "pixel", "priority": 6},
    {"id": "later", "title": "Write the changelog", "kind": "code", "inputs": ["calc.py"],
     "tests": ["python -m pytest -q test_calc.py"], "priority": 1},
]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """`auto-gvpie --serve` in its own process, as a user starts it."""

    def __init__(self, home: Path, *args: str, host: str = "127.0.0.1"):
        self.port = free_port()
        self.host = host
        self.args = ["--home", str(home), "--serve", "--port", str(self.port), "--host", host, *args]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Dashboard":
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"--serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the dashboard did not start listening")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> dict:
    """A home after a night's run: a code task fixed on its second attempt (the first failed its
    test), a code task that failed, a pixel program, and one task still pending."""
    base = tmp_path_factory.mktemp("web")
    home = base / "home"
    home.mkdir()
    repo = make_repo(base / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC, ".gitignore": "__pycache__/\n"})
    write_tasks(home, TASKS)
    with LLMServer([WRONG, FIX, MADE_UP, WRONG2, "Here it is:\n" + PIXEL, SMILEY]) as server:
        out = run_cli("--home", str(home), "--repo", str(repo), "--llm-url", server.url, "--no-memory",
                      "--apply", "none", "--once", "--max-tasks", "4", "--json")
    assert out.returncode == 1, out.stderr  # one task failed
    report = {t["id"]: t["status"] for t in json.loads(out.stdout)["tasks"]}
    assert report == {"fix-add": "done", "swap-add": "failed", "boot-screen": "done", "smiley": "done"}
    return {"home": home, "repo": repo}


@pytest.fixture(scope="module")
def dashboard(filled):
    with Dashboard(filled["home"]) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (installed by .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """Always under tmp_path; also into GVPIE_SCREENSHOTS (e.g. docs/img) when that is set."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(800, height + 160), 2400))
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    target = os.environ.get("GVPIE_SCREENSHOTS")
    if target:
        folder = (ROOT / target) if not Path(target).is_absolute() else Path(target)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    driver.set_window_size(1280, 1000)
    return path


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def flash(driver) -> str:
    """The message the page shows after an action (waiting for the page after the POST to load)."""
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, 20, poll_frequency=0.1).until(lambda d: by_css(d, "#flash"))[0].text


# -- in the browser ------------------------------------------------------------------------------


def test_queue_page_shows_every_task_with_its_status(dashboard, browser, tmp_path):
    browser.get(dashboard.url + "/")
    rows = {r.get_attribute("data-task"): r.get_attribute("data-status") for r in by_css(browser, "tr[data-task]")}
    assert rows == {"fix-add": "done", "swap-add": "failed", "boot-screen": "done", "smiley": "done",
                    "later": "pending"}
    failed = next(r for r in by_css(browser, "tr[data-task]") if r.get_attribute("data-task") == "swap-add")
    assert "tests fail" in failed.text  # the last error, without opening anything
    assert "daemon not running" in by_css(browser, "#health")[0].text
    assert screenshot(browser, tmp_path, "dashboard-queue.png").stat().st_size > 10_000


def test_task_page_shows_each_attempt_its_diff_and_the_failing_output_first(dashboard, browser, tmp_path):
    browser.get(dashboard.url + "/")
    from selenium.webdriver.support.ui import WebDriverWait

    next(a for a in by_css(browser, "tr[data-task] a") if a.text == "fix-add").click()
    WebDriverWait(browser, 20).until(lambda d: d.current_url.endswith("/task/fix-add") and by_css(d, ".attempt"))
    first, second = by_css(browser, ".attempt")
    assert "tests failed" in first.find_element("css selector", ".pill").text
    assert "passed" in second.find_element("css selector", ".pill").text
    # Attempt 1's diff is what that answer changed; its failing test output is shown, not folded.
    assert "+    return a * b" in first.find_element("css selector", "pre.diff").text
    failing = first.find_element("css selector", ".test.fail pre.test-output")
    assert failing.is_displayed() and "assert" in failing.text and "failed" in failing.text
    assert "+    return a + b" in second.find_element("css selector", "pre.diff").text
    ranking = first.find_element("css selector", "details.ranking")
    assert "calc.py" in ranking.get_attribute("innerHTML") and "listed in the task's inputs" in ranking.get_attribute("innerHTML")
    # A refused edit says why, in the words the model was told.
    browser.get(dashboard.url + "/task/swap-add")
    refused, failed = by_css(browser, ".attempt")
    assert "refused" in refused.find_element("css selector", ".pill").text
    assert "def add(x, y)" in refused.find_element("css selector", ".refusal").text or \
        "refused" in refused.find_element("css selector", ".refusal").text
    assert not refused.find_elements("css selector", "pre.diff")  # nothing was changed
    assert "tests failed" in failed.find_element("css selector", ".pill").text
    assert screenshot(browser, tmp_path, "dashboard-task.png").stat().st_size > 10_000


def test_gallery_images_decode_scaled_without_smoothing(dashboard, browser, tmp_path):
    browser.get(dashboard.url + "/gallery")
    images = {i.get_attribute("alt").split()[0]: i for i in by_css(browser, ".gallery img.pixel")}
    assert set(images) == {"boot_screen", "smiley"}
    sizes = {name: browser.execute_script(
        "var i = arguments[0]; return i.complete ? [i.naturalWidth, i.naturalHeight] : [0, 0];", image)
        for name, image in images.items()}
    assert sizes == {"boot_screen": [256, 256], "smiley": [256, 256]}  # scaled by a whole factor on the server
    cards = " ".join(c.text for c in by_css(browser, ".gallery .card"))
    assert "Draw a boot screen icon" in cards and "Draw a smiley that says OK" in cards
    assert screenshot(browser, tmp_path, "dashboard-gallery.png").stat().st_size > 5_000
    # The pixels are the program's: the corner is the background colour, the frame the foreground.
    png = requests.get(dashboard.url + "/image/boot-screen.png", timeout=10).content
    from io import BytesIO
    from PIL import Image
    image = Image.open(BytesIO(png)).convert("RGB")
    assert image.getpixel((0, 0)) == (10, 20, 60) and image.getpixel((2 * 16 + 3, 2 * 16 + 3)) == (0, 255, 120)


def test_a_task_added_through_the_form_lands_in_the_inbox_file(dashboard, browser, filled):
    before = (filled["home"] / "auto_tasks.json").read_text()
    browser.get(dashboard.url + "/")
    form = by_css(browser, "#add-task")[0]
    form.find_element("name", "title").send_keys("Draw a tiny heart")
    form.find_element("name", "kind").send_keys("pixel")
    form.find_element("name", "priority").send_keys("3")
    form.find_element("css selector", "button[type=submit]").click()
    assert "added" in flash(browser)
    added = [t for t in read_inbox(filled["home"] / "auto_tasks.json") if t.title == "Draw a tiny heart"]
    assert len(added) == 1 and added[0].kind == "pixel" and added[0].priority == 3
    assert (filled["home"] / "auto_tasks.json").read_text().startswith(before)  # appended, never rewritten
    rows = {r.get_attribute("data-task") for r in by_css(browser, "tr[data-task]")}
    assert added[0].id in rows


def test_cancelling_a_pending_task_from_its_page(dashboard, browser, filled):
    browser.get(dashboard.url + "/task/later")
    by_css(browser, "#cancel button")[0].click()
    assert "cancelled later" in flash(browser)
    assert "cancelled" in by_css(browser, ".pill.s-cancelled")[0].text
    assert not by_css(browser, "#cancel")  # nothing left to cancel
    status = run_cli("--home", str(filled["home"]), "--status", "--json")
    assert {t["id"]: t["status"] for t in json.loads(status.stdout)["tasks"]}["later"] == "cancelled"


def test_history_charts_and_daemon_health(dashboard, browser, tmp_path):
    browser.get(dashboard.url + "/history")
    charts = by_css(browser, ".charts svg")
    assert len(charts) == 3
    bars = browser.execute_script("return document.querySelectorAll('.charts svg rect').length")
    assert bars >= 3
    assert "done" in charts[0].get_attribute("innerHTML") and "failed" in charts[0].get_attribute("innerHTML")
    assert screenshot(browser, tmp_path, "dashboard-history.png").stat().st_size > 5_000
    browser.get(dashboard.url + "/daemon")
    assert "daemon not running" in by_css(browser, "#health")[0].text


def test_memory_page_says_when_there_is_no_memory(dashboard, browser):
    browser.get(dashboard.url + "/memory?q=add")
    assert "no memory yet" in browser.page_source


# -- the safety checks -----------------------------------------------------------------------------


def raw_get(port: int, path: str, host: str | None = None) -> int:
    """A request sent exactly as written: no client normalises `..` away."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_pages_work_without_script(dashboard):
    """Progressive enhancement: the HTML as served already holds the queue and the task's attempts."""
    queue = requests.get(dashboard.url + "/", timeout=10).text
    assert 'data-task="fix-add"' in queue and 'data-status="failed"' in queue
    task = requests.get(dashboard.url + "/task/fix-add", timeout=10).text
    assert 'id="attempt-1"' in task and "assert add(2, 3) == 5" in task
    assert "<script" not in task and "http://" not in task.replace("http://www.w3.org/2000/svg", "")


def test_artifact_names_are_validated_and_nothing_outside_artifacts_is_served(dashboard, filled):
    assert requests.get(dashboard.url + "/artifacts/fix-add.patch", timeout=10).status_code == 200
    outside = filled["home"] / "artifacts" / "escape.txt"
    outside.symlink_to(filled["home"] / "auto_tasks.json")
    for path in ("/artifacts/../auto_tasks.json", "/artifacts/..%2Fauto_tasks.json",
                 "/artifacts/%2e%2e/%2e%2e/etc/passwd", "/artifacts//etc/passwd", "/artifacts/.hidden",
                 "/artifacts/escape.txt", "/image/..%2F..%2Fetc%2Fpasswd", "/task/..%2F..%2Fetc"):
        assert raw_get(dashboard.port, path) in (400, 404), path
    outside.unlink()


def test_posts_without_the_csrf_token_are_refused(dashboard, filled):
    inbox = filled["home"] / "auto_tasks.json"
    before = inbox.read_text()
    plain = requests.post(dashboard.url + "/tasks", data={"title": "sneaky"}, timeout=10)
    assert plain.status_code == 403
    forged = requests.post(dashboard.url + "/tasks", data={"title": "sneaky", "csrf": "guess"},
                           cookies={"gvpie_csrf": "other"}, timeout=10)
    assert forged.status_code == 403
    cross = requests.post(dashboard.url + "/tasks", data={"title": "sneaky", "csrf": "same"},
                          cookies={"gvpie_csrf": "same"}, headers={"Origin": "http://evil.example"}, timeout=10)
    assert cross.status_code == 403
    assert requests.post(dashboard.url + "/task/later/cancel", timeout=10).status_code == 403
    assert inbox.read_text() == before


def test_a_request_for_another_host_name_is_refused_without_a_token(dashboard):
    # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    assert raw_get(dashboard.port, "/", host=f"evil.example:{dashboard.port}") == 403
    assert raw_get(dashboard.port, "/", host=f"localhost:{dashboard.port}") == 200


def test_a_port_in_use_is_a_usage_error(dashboard, filled):
    out = run_cli("--home", str(filled["home"]), "--serve", "--port", str(dashboard.port))
    assert out.returncode == 2 and f"cannot listen on 127.0.0.1:{dashboard.port}" in out.stderr


def test_a_non_loopback_address_needs_a_token_and_every_request_then_carries_it(filled):
    refused = run_cli("--home", str(filled["home"]), "--serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 2 and "--token" in refused.stderr
    with Dashboard(filled["home"], "--token", "s3cret", host="0.0.0.0") as server:
        assert requests.get(server.url + "/", timeout=10).status_code == 401
        assert requests.get(server.url + "/api/queue", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        assert requests.get(server.url + "/artifacts/fix-add.patch", timeout=10).status_code == 401
        ok = requests.get(server.url + "/api/queue", headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert ok.status_code == 200 and {t["id"] for t in ok.json()["tasks"]} >= {"fix-add", "boot-screen"}
        # The printed link trades ?token= for a cookie, and the session then works like a browser's.
        session = requests.Session()
        page = session.get(server.url + "/gallery?token=s3cret", timeout=10)
        assert page.status_code == 200 and "boot_screen" in page.text and page.url.endswith("/gallery")
        assert session.get(server.url + "/task/fix-add", timeout=10).status_code == 200


# -- the morning report ----------------------------------------------------------------------------


def test_report_writes_one_html_file_with_inlined_images_and_prints_a_summary(filled, browser, tmp_path):
    out = tmp_path / "report.html"
    result = run_cli("--home", str(filled["home"]), "--report", "--since", "12h", "--html", str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"task\(s\) finished: 3 done, 1 failed, [01] cancelled", result.stdout), result.stdout
    assert "failed  swap-add after 2 attempt(s): tests fail" in result.stdout
    html = out.read_text()
    assert "data:image/png;base64," in html and 'src="/' not in html and 'src="http' not in html
    assert "<script" not in html and "+    return a + b" in html
    browser.get(out.as_uri())
    widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    assert by_css(browser, "#task-fix-add .attempt")
    bad = run_cli("--home", str(filled["home"]), "--report", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr


# -- live: a task running while the page is open ----------------------------------------------------


def test_next_to_a_daemon_the_queue_is_live_and_a_running_task_is_cancelled(tmp_path, browser):
    """A daemon works; the dashboard runs next to it. The queue page, loaded once, shows the task
    running and the tokens arriving; the daemon page its pid and current task; the cancel button
    stops the task: it ends cancelled, its worktree gone, the checkout untouched, the daemon goes on."""
    from selenium.webdriver.support.ui import WebDriverWait

    home = tmp_path / "home"
    home.mkdir()
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC})
    write_tasks(home, [TASKS[0]])
    slow = Reply(content=FIX + " ".join(["words"] * 600), token_delay=0.05)
    with LLMServer([slow]) as llm, Dashboard(home) as dashboard:
        browser.get(dashboard.url + "/")
        assert [r.get_attribute("data-status") for r in by_css(browser, "tr[data-task]")] == ["pending"]
        daemon = subprocess.Popen(
            [sys.executable, str(ROOT / "auto_gvpie" / "orchestrator.py"), "--home", str(home), "--repo", str(repo),
             "--llm-url", llm.url, "--no-memory", "--daemon", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "GVPIE_LLM_RETRIES": "1"})
        try:
            wait = WebDriverWait(browser, 60, poll_frequency=0.2)
            tokens = wait.until(lambda d: [t.text for t in by_css(d, "tr[data-status=in_progress] .tokens")])
            assert "tokens so far" in tokens[0]
            first = int(tokens[0].split()[0])
            wait.until(lambda d: any(int(t.text.split()[0]) > first
                                     for t in by_css(d, "tr[data-status=in_progress] .tokens")))
            browser.get(dashboard.url + "/daemon")
            health = by_css(browser, "#health")[0].text
            assert "daemon running" in health and f"pid {daemon.pid}" in health and "fix-add" in health
            browser.get(dashboard.url + "/task/fix-add")
            by_css(browser, "#cancel button")[0].click()
            assert "asked fix-add to stop" in flash(browser)
            api = dashboard.url + "/api/queue"
            deadline = time.monotonic() + 60
            while requests.get(api, timeout=10).json()["tasks"][0]["status"] != "cancelled":
                assert time.monotonic() < deadline and daemon.poll() is None, "the task was not cancelled"
                time.sleep(0.2)
            assert daemon.poll() is None  # the daemon goes on
        finally:
            daemon.terminate()
            stdout, stderr = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, stderr
        assert json.loads(stdout)["tasks"][0]["status"] == "cancelled"
        browser.get(dashboard.url + "/")
        assert [r.get_attribute("data-status") for r in by_css(browser, "tr[data-task]")] == ["cancelled"]
    assert (repo / "calc.py").read_text() == CALC
    assert not (home / ".gvpie" / "worktrees").exists() or not list((home / ".gvpie" / "worktrees").iterdir())
    assert len(llm.requests) == 1


def test_memory_search_finds_what_the_worker_remembered(tmp_path, browser):
    """With memory on, the search page answers like `python -m auto_gvpie.memory search`."""
    home = tmp_path / "home"
    home.mkdir()
    write_tasks(home, [TASKS[2]])
    with LLMServer([PIXEL]) as llm:
        out = run_cli("--home", str(home), "--llm-url", llm.url, "--once")
    assert out.returncode == 0, out.stderr
    with Dashboard(home) as dashboard:
        browser.get(dashboard.url + "/memory")
        box = by_css(browser, "input[name=q]")[0]
        box.send_keys("boot screen icon")
        box.submit()
        hits = [row.text for row in by_css(browser, "#hits tr")[1:]]
    assert hits and any("boot-screen" in hit for hit in hits)
    cli = subprocess.run([sys.executable, "-m", "auto_gvpie.memory", "search", "boot screen icon", "--home", str(home),
                          "--json", "--k", "10"], capture_output=True, text=True, cwd=ROOT)
    assert {h["task_id"] for h in json.loads(cli.stdout)["hits"]} == {"boot-screen"}


def test_every_page_of_a_brand_new_home(tmp_path):
    """Before the first task: every page answers and says there is nothing yet; nothing is written."""
    home = tmp_path / "fresh"
    home.mkdir()
    with Dashboard(home) as dashboard:
        pages = {path: requests.get(dashboard.url + path, timeout=30) for path in
                 ("/", "/gallery", "/history", "/daemon", "/memory?q=anything", "/api/queue")}
        missing = requests.get(dashboard.url + "/task/nothing-here", timeout=10)
    assert {path: r.status_code for path, r in pages.items()} == dict.fromkeys(pages, 200)
    assert "No tasks yet" in pages["/"].text and "No pixel artifacts yet" in pages["/gallery"].text
    assert "nothing yet" in pages["/history"].text and "no memory yet" in pages["/memory?q=anything"].text
    assert pages["/api/queue"].json()["tasks"] == []
    assert missing.status_code == 404
    assert list(home.iterdir()) == []  # looking changes nothing
