"""The dashboard in a real browser (Debian's chromium through chromium-driver and selenium), over a registry
made by a real train → optimize → job: pages load without a console error, images and charts are drawn, a
job's log follows live, and the cancel button stops a running job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from tests.conftest import free_port
from tests.data.conftest import write_digits
from tests.jobs.conftest import wait_for

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
    pytest.mark.slow,
]
LEPTON = str(Path(sys.executable).with_name("lepton"))
# LEPTON_SCREENSHOTS=docs/img refreshes the README's screenshots; otherwise they go to a temporary folder
SHOTS = os.environ.get("LEPTON_SCREENSHOTS")


@dataclass(frozen=True)
class World:
    """A registry made by the CLI, a dashboard over it, and where to reach both."""

    home: Path
    env: dict[str, str]
    url: str

    def lepton(self, *args: str) -> dict[str, Any]:
        """Run `lepton ARGS --json` against this registry; return what it printed."""
        done = subprocess.run([LEPTON, *args, "--json"], env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed

    def submit(self, name: str, code: str) -> int:
        """Submit a local job running `python -c code`; return its id."""
        spec = self.home / f"{name}.json"
        argv = [sys.executable, "-u", "-c", code]
        spec.write_text(json.dumps({"kind": "command", "name": name, "spec": {"argv": argv}}))
        return int(self.lepton("job", "submit", str(spec))["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        """Return job `job_id` as the API gives it."""
        body: dict[str, Any] = httpx.get(f"{self.url}/api/v1/jobs/{job_id}", timeout=5).json()
        return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("browser") / "lepton-home"
    env = {**os.environ, "LEPTON_HOME": str(home)}
    for name in ("LEPTON_DB_URL", "LEPTON_ARTIFACTS", "LEPTON_TOKEN"):
        env.pop(name, None)
    port = free_port()
    made = World(home, env, f"http://127.0.0.1:{port}")
    made.lepton("train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--name", "digits")
    made.lepton("optimize", "digits", "--data", "digits", "--techniques", "onnx,int8")
    scans = write_digits(home.parent / "scans", 60)
    (scans / "3" / "broken.png").write_bytes(b"not a png")
    made.lepton("data", "add", "scans", str(scans))
    proc = subprocess.Popen([LEPTON, "dashboard", "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _answers(made.url), timeout=60)
        yield made
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        _stop_worker(env)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/models", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stop_worker(env: dict[str, str]) -> None:
    """Stop the job worker that `lepton job submit` started for this registry."""
    from lepton_ai.jobs.processes import worker_pid

    with mock.patch.dict(os.environ, {"LEPTON_HOME": env["LEPTON_HOME"]}):
        pid = worker_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # this machine's network is closed: no background calls to Google's hosts
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1360,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def visit(world: World, browser: Any, tmp_path: Path) -> Callable[..., Any]:
    """Open a page; after the test, fail on any console error the pages logged."""
    shots = Path(SHOTS) if SHOTS else tmp_path

    def open_page(path: str, shot: str | None = None) -> Any:
        browser.get(world.url + path)
        if shot:
            shots.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(shots / f"dashboard-{shot}.png"))
        return browser

    browser.get_log("browser")
    yield open_page
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def _follow(browser: Any, how: str, what: str) -> None:
    """Click a link or button that loads a new page, and wait until the new page has replaced the old."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(how, what).click()
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(old))
    WebDriverWait(browser, 20).until(lambda b: b.execute_script("return document.readyState") == "complete")


def _text(browser: Any, css: str) -> str:
    """Return an element's text; "" while the page is being replaced (a reload between find and read)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        text: str = browser.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    return text


def test_models_lead_to_a_version_with_its_lineage_and_report(visit: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By

    page = visit("/", shot="overview")
    assert "2\nversions" in _text(page, ".cards")
    page = visit("/models", shot="models")
    _follow(page, By.LINK_TEXT, "digits")
    _follow(page, By.LINK_TEXT, "v2")
    assert page.current_url.endswith("/models/digits/2")
    assert "digits:1" in _text(page, "#lineage") and "candidate=" in _text(page, "#lineage")
    image = page.find_element(By.ID, "report-chart")
    loaded = wait_for(lambda: page.execute_script("return arguments[0].complete", image), timeout=10)
    assert loaded and page.execute_script("return arguments[0].naturalWidth", image) > 100
    assert "best" in _text(page, "#trials")
    visit("/models/digits/2", shot="version")


def test_a_dataset_version_shows_its_class_balance_and_what_was_left_out(visit: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By

    page = visit("/datasets")
    _follow(page, By.LINK_TEXT, "scans")
    _follow(page, By.LINK_TEXT, "v1")
    bars = page.find_elements(By.CSS_SELECTOR, "#classes svg.chart rect")
    assert len(bars) == 10 and all(bar.rect["width"] > 10 for bar in bars)
    assert "broken.png" in _text(page, "#quarantine")


def test_a_run_chart_is_drawn_with_its_points(visit: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By

    page = visit("/runs?kind=train")
    _follow(page, By.CSS_SELECTOR, "#runs td a")
    lines = page.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
    assert lines and all(int(line.get_attribute("data-points")) == 3 for line in lines)
    # drawn, not just present: the browser laid each line out with a real extent
    assert all(line.rect["width"] > 100 for line in lines)
    visit(page.current_url.removeprefix(page.current_url.split("/runs")[0]), shot="run")
    page = visit("/runs")
    for box in page.find_elements(By.CSS_SELECTOR, "#runs input[type=checkbox]"):
        box.click()
    _follow(page, By.ID, "compare")
    assert "/runs/compare?ids=" in page.current_url and "compare 2" in _text(page, "h1")
    assert page.find_elements(By.CSS_SELECTOR, "svg.chart polyline, svg.chart circle")
    visit(page.current_url.removeprefix(page.current_url.split("/runs")[0]), shot="compare")


def test_a_job_log_follows_what_is_written_after_the_page_opened(
    world: World, visit: Callable[..., Any]
) -> None:
    go = world.home / "go"
    code = (
        "import os, time\nprint('first line')\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.1)\nprint('written after the page opened')\n"
        "time.sleep(8)"
    )
    job = world.submit("follow", code)
    wait_for(lambda: world.job(job)["state"] == "running", timeout=60)
    page = visit(f"/jobs/{job}")
    wait_for(lambda: "first line" in _text(page, "#log"), timeout=15)
    assert "written after the page opened" not in _text(page, "#log")
    go.touch()
    wait_for(lambda: "written after the page opened" in _text(page, "#log"), timeout=15)
    # followed, not reloaded: the job is still running when its new line shows
    assert "running" in _text(page, "#job-state")
    wait_for(lambda: "succeeded" in _text(page, "#job-state"), timeout=15)


def test_the_cancel_button_stops_a_running_job(world: World, visit: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By

    job = world.submit("long", "import time\nprint('working', flush=True)\ntime.sleep(600)")
    wait_for(lambda: world.job(job)["state"] == "running", timeout=60)
    page = visit(f"/jobs/{job}", shot="job")
    _follow(page, By.ID, "cancel")
    wait_for(lambda: "cancelled" in _text(page, "#job-state"), timeout=20)
    assert world.job(job)["state"] == "cancelled"
    visit("/jobs", shot="jobs")


def test_the_services_page_shows_a_live_serve_then_marks_it_stopped(
    world: World, visit: Callable[..., Any]
) -> None:
    from selenium.webdriver.common.by import By

    env = {**world.env, "LEPTON_HEARTBEAT_S": "0.5"}
    proc = subprocess.Popen([LEPTON, "serve", "digits:1", "--port", "0"], env=env, stderr=subprocess.DEVNULL)
    try:
        service = wait_for(lambda: _live_service(world, proc.pid), timeout=60)
        wait_for(lambda: _answers_predict(service["url"]), timeout=60)
        page = visit("/services")
        for _ in range(20):
            _answers_predict(service["url"])
        row = f'tr[data-service="{service["id"]}"]'
        page.refresh()
        cells = [c.text for c in page.find_elements(By.CSS_SELECTOR, f"{row} td")]
        assert cells[1] == "running" and cells[2] == "ready" and float(cells[3]) > 0, cells
        assert float(cells[4]) <= float(cells[5]) and cells[6] == "0 %" and cells[7] == "digits:1"
        visit("/services", shot="services")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    page = visit("/services")
    assert _text(page, f'tr[data-service="{service["id"]}"] .service-state') == "stopped"


def _live_service(world: World, pid: int) -> dict[str, Any] | None:
    items = httpx.get(f"{world.url}/api/v1/services?live=true", timeout=5).json()["items"]
    return next((s for s in items if s["pid"] == pid), None)


def _answers_predict(url: str) -> bool:
    try:
        return httpx.post(f"{url}/predict", json={"inputs": [[0.0] * 64]}, timeout=5).status_code == 200
    except httpx.TransportError:
        return False
