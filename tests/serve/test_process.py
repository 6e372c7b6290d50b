"""The model in a process of its own: init and handlers there, errors per request, cancels, a dead
model process replaced, and the wire's framing."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from lepton_ai.serve.process import Frames, frame
from lepton_ai.serve.server import ServerProcess

SERVICE = """
import os, time
from lepton_ai.serve import Photon, handler

class Remote(Photon):
    model_process = True

    def init(self):
        self.init_pid, self.ran, self.sizes = os.getpid(), [], []

    @handler(max_batch_size=8, max_wait_ms=1, timeout_s=0.5)
    def work(self, inputs: list[float]) -> list[float]:
        self.ran.extend(inputs)
        self.sizes.append(len(inputs))
        if any(x < 0 for x in inputs):
            raise ValueError("negative numbers are refused")
        if 13 in inputs:
            raise RuntimeError("unlucky")
        return [x * 10 for x in inputs]

    @handler
    def unsendable(self) -> str:
        return (c for c in "a generator cannot be pickled")

    @handler
    def info(self, sleep: float = 0.0) -> dict:
        time.sleep(sleep)
        return {"pid": os.getpid(), "init_pid": self.init_pid, "ran": self.ran, "sizes": self.sizes}

class Broken(Photon):
    model_process = True

    def init(self):
        raise OSError("no such model")

    @handler
    def info(self) -> dict:
        return {}
"""


@pytest.fixture
def service_file(tmp_path: Path) -> Path:
    path = tmp_path / "service.py"
    path.write_text(SERVICE)
    return path


def test_frames_cut_anywhere_come_back_whole() -> None:
    messages = [("run", i, "predict", list(range(i)), {"return_probs": bool(i % 2)}) for i in range(20)]
    stream = b"".join(frame(m) for m in messages)
    frames, got = Frames(), []
    # 7 bytes at a time: lengths and bodies split everywhere
    for start in range(0, len(stream), 7):
        got += frames.feed(stream[start : start + 7])
    assert got == messages and not frames.buffer


def test_init_and_handlers_run_in_the_model_process_and_errors_stay_per_request(service_file: Path) -> None:
    with ServerProcess([f"{service_file}:Remote"]) as server:
        info = httpx.post(f"{server.url}/info", json={}).json()
        assert server.proc is not None and info["pid"] != server.proc.pid and info["pid"] == info["init_pid"]
        # one batch of good and bad requests together
        with ThreadPoolExecutor(8) as pool:
            bodies = [[1.0], [-1.0], [2.0, 3.0], [13.0], [4.0]]
            answers = list(pool.map(lambda x: httpx.post(f"{server.url}/work", json={"inputs": x}), bodies))
        assert [a.status_code for a in answers] == [200, 422, 200, 500, 200]
        assert answers[0].json() == {"outputs": [10.0]} and answers[2].json() == {"outputs": [20.0, 30.0]}
        assert "negative numbers are refused" in answers[1].json()["message"]
        assert answers[3].json()["message"] == "RuntimeError in handler work"
        bad = httpx.post(f"{server.url}/unsendable", json={})
        assert bad.status_code == 500 and bad.json()["message"] == "TypeError in handler unsendable"
        # logged there, with its traceback
        assert "unlucky" in server.output() and "model process" in server.output()


def test_a_request_that_times_out_is_dropped_before_its_batch_runs(service_file: Path) -> None:
    with ServerProcess([f"{service_file}:Remote"]) as server, ThreadPoolExecutor(2) as pool:
        busy = pool.submit(httpx.post, f"{server.url}/info", json={"sleep": 1.0}, timeout=10)
        # the model process is busy: the next request waits there
        time.sleep(0.2)
        late = httpx.post(f"{server.url}/work", json={"inputs": [99.0]}, timeout=10)
        assert late.status_code == 504 and busy.result().status_code == 200
        assert httpx.post(f"{server.url}/work", json={"inputs": [7.0]}).json() == {"outputs": [70.0]}
        # 99 never ran
        assert httpx.post(f"{server.url}/info", json={}).json()["ran"] == [7.0]


def test_a_request_over_the_limit_is_split_in_the_model_process_too(service_file: Path) -> None:
    # clear of the 13 that fails
    inputs = [float(x) for x in range(100, 100 + 10 * 8 + 3)]
    with ServerProcess([f"{service_file}:Remote"]) as server:
        answer = httpx.post(f"{server.url}/work", json={"inputs": inputs})
        assert answer.json() == {"outputs": [x * 10 for x in inputs]}
        assert httpx.post(f"{server.url}/info", json={}).json()["sizes"] == [8] * 10 + [3]


def test_a_model_process_that_dies_fails_its_requests_and_is_replaced(service_file: Path) -> None:
    with ServerProcess([f"{service_file}:Remote"]) as server, ThreadPoolExecutor(1) as pool:
        first = httpx.post(f"{server.url}/info", json={}).json()["pid"]
        in_flight = pool.submit(httpx.post, f"{server.url}/info", json={"sleep": 5.0}, timeout=10)
        time.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        answer = in_flight.result()
        assert answer.status_code == 500 and answer.json()["message"] == "ModelProcessExited in handler info"
        deadline = time.monotonic() + 60
        # not ready until the new one is
        while httpx.get(f"{server.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        again = httpx.post(f"{server.url}/info", json={}).json()
        assert again["pid"] != first and again["pid"] == again["init_pid"]
        assert "the model process exited (code -9): starting another" in server.output()


def test_a_model_process_killed_under_load_fails_only_what_it_held(service_file: Path) -> None:
    with ServerProcess([f"{service_file}:Remote"]) as server, httpx.Client(base_url=server.url) as c:
        pid = c.post("/info", json={}).json()["pid"]
        stop_at, killed_at = time.monotonic() + 30, []

        def client(i: int) -> list[tuple[float, int]]:
            seen = []
            while time.monotonic() < stop_at:
                status = c.post("/work", json={"inputs": [float(i + 100)]}, timeout=10).status_code
                seen.append((time.monotonic(), status))
                # served again by another model process: enough
                if killed_at and seen[-1][0] > killed_at[0] + 1 and status == 200:
                    break
            return seen

        with ThreadPoolExecutor(8) as pool:
            answers = pool.map(client, range(8))
            time.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
            killed_at.append(time.monotonic())
            seen = [a for each in answers for a in each]
    statuses = {status for _, status in seen}
    # work's timeout_s is 0.5: a request queued while the next process starts may run out of time (504)
    assert statuses <= {200, 500, 503, 504}, statuses
    # the failures are those the dead process held and those sent while the next one started
    assert all(status == 200 for at, status in seen if at < killed_at[0]), seen
    late = [at - killed_at[0] for at, status in seen if status != 200]
    assert late and max(late) < 20, late
    assert sum(status == 200 for at, status in seen if at > killed_at[0]) >= 8


def test_init_failing_in_the_model_process_fails_health(service_file: Path) -> None:
    with ServerProcess([f"{service_file}:Broken"], ready_path="/healthz") as server:
        deadline = time.monotonic() + 60
        while (health := httpx.get(f"{server.url}/healthz")).status_code == 200:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        assert health.status_code == 500 and health.json()["error"].startswith("OSError in init")
        assert "OSError: no such model" in server.output()
        assert httpx.post(f"{server.url}/info", json={}).status_code == 503
