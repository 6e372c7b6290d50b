"""`lepton serve` as a process: graceful drain on SIGTERM, several workers, and abuse it survives."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lepton_ai.serve.metrics import Metrics
from lepton_ai.serve.server import ServerProcess, WorkerConfig, _replace_exited, serve
from lepton_ai.serve.target import is_class_target, load_photon
from tests.serving import worker_gauges

SERVICE = """
import os, time
from lepton_ai.serve import Photon, handler

class Slow(Photon):
    @handler(max_batch_size=4, max_wait_ms=1)
    def work(self, inputs: list[float]) -> list[float]:
        time.sleep(1.0)
        return [x * 10 for x in inputs]

class Loaded(Photon):
    def init(self):
        # 200,000 objects the collector tracks
        self.model = [{"weight": [i]} for i in range(100_000)]

    @handler
    def gc_state(self) -> dict:
        import gc
        return {"pid": os.getpid(), "frozen": gc.get_freeze_count(), "threshold": list(gc.get_threshold())}

class Pid(Photon):
    @handler
    def pid(self) -> int:
        time.sleep(0.005)
        return os.getpid()
"""


@pytest.fixture
def service_file(tmp_path: Path) -> Path:
    path = tmp_path / "service.py"
    path.write_text(SERVICE)
    return path


@pytest.mark.parametrize("where", ["--no-model-process", "--model-process"])
def test_sigterm_stops_accepting_drains_in_flight_then_exits(service_file: Path, where: str) -> None:
    # SIGTERM reaches the model process too
    server = ServerProcess([f"{service_file}:Slow", where]).__enter__()
    try:
        with ThreadPoolExecutor(4) as pool:
            pending = [
                pool.submit(httpx.post, f"{server.url}/work", json={"inputs": [i]}, timeout=10)
                for i in range(4)
            ]
            # all four are in the batch that is running
            time.sleep(0.4)
            code = server.stop()
            answers = [p.result() for p in pending]
        # uvicorn re-raises the signal once drained
        assert code in (0, -signal.SIGTERM), server.output()
        assert "Application shutdown complete" in server.output()
        assert [a.json() for a in answers] == [{"outputs": [10.0 * i]} for i in range(4)]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz")
    finally:
        server.__exit__(None, None, None)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("where", ["--no-model-process", "--model-process"])
def test_what_init_loaded_is_kept_out_of_the_collectors_sight(
    service_file: Path, workers: str, where: str
) -> None:
    # A full collection walks every tracked object: with a model loaded that stalled the event loop ~100 ms.
    # With a model process the handler answers from there (one per worker): its collector is set the same way.
    states, deadline = {}, time.monotonic() + 60
    with ServerProcess([f"{service_file}:Loaded", "--workers", workers, where]) as server:
        # every worker, once it is ready (one ready worker made the server so)
        while len(states) < int(workers):
            assert time.monotonic() < deadline, f"not every worker answered: {states}"
            r = httpx.post(f"{server.url}/gc_state", json={}, headers={"Connection": "close"})
            if r.status_code == 200:
                states[r.json()["pid"]] = r.json()
    # answered by the server's own process: one worker, no model process
    assert server.proc is not None
    assert (server.proc.pid in states) == (workers == "1" and where == "--no-model-process")
    for state in states.values():
        assert state["frozen"] > 200_000 and state["threshold"] == [10_000, 20, 20]


def test_workers_share_the_port_evenly_and_their_metrics(service_file: Path) -> None:
    import aiohttp

    async def burst(url: str) -> Counter:
        # 64 keep-alive connections opened at once: with one shared socket the first worker to wake took
        # them all
        seen: Counter = Counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

            async def client() -> None:
                for _ in range(5):
                    async with session.post(f"{url}/pid", json={}) as r:
                        seen[await r.json()] += 1

            await asyncio.gather(*(client() for _ in range(64)))
        return seen

    with ServerProcess([f"{service_file}:Pid", "--workers", "2"]) as server:
        deadline, up, polls = time.monotonic() + 60, set(), 0
        # each worker binds its socket once it has started: wait for the second
        while len(up) < 2:
            assert time.monotonic() < deadline, "the second worker never answered"
            up.add(httpx.post(f"{server.url}/pid", json={}, headers={"Connection": "close"}).json())
            polls += 1
        seen = asyncio.run(burst(server.url))
        metrics = httpx.get(f"{server.url}/metrics").text
    assert len(seen) == 2 and server.proc.pid not in seen and min(seen.values()) >= 320 * 0.15, seen
    # summed over both
    assert f'lepton_requests_total{{code="200",handler="pid"}} {320.0 + polls}' in metrics


def _gauges() -> dict[str, float]:
    """Return the summed gauges the metrics endpoint shows, by name (and handler)."""
    families = text_string_to_metric_families(Metrics().render().decode())
    return {
        s.name + "".join(s.labels.values()): s.value for f in families if f.type == "gauge" for s in f.samples
    }


def test_a_worker_that_exited_leaves_the_gauges_to_the_live_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as `serve --workers` sets it up: set before the workers start
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    stay = ctx.Event()
    live = ctx.Process(target=worker_gauges, args=(1, 2, stay))
    dead = ctx.Process(target=worker_gauges, args=(30, 40))
    live.start(), dead.start()
    try:
        dead.join(30)
        deadline = time.monotonic() + 30
        # both counted, until the supervisor notices
        while _gauges() != {"lepton_inflight_requests": 31, "lepton_queue_depthwork": 42}:
            assert time.monotonic() < deadline, _gauges()
            time.sleep(0.05)
        procs, replacement = [live, dead], ctx.Process()
        _replace_exited(procs, lambda: replacement, threading.Event())
        assert procs == [live, replacement]
        assert _gauges() == {"lepton_inflight_requests": 1, "lepton_queue_depthwork": 2}
    finally:
        stay.set()
        live.join(30)


def test_the_access_log_names_the_client_a_proxy_forwarded(service_file: Path) -> None:
    with ServerProcess([f"{service_file}:Pid", "--access-log"]) as server:
        assert (
            httpx.post(f"{server.url}/pid", json={}, headers={"X-Forwarded-For": "203.0.113.7"}).status_code
            == 200
        )
        deadline = time.monotonic() + 10
        # the access log is written after the answer
        while '203.0.113.7:0 - "POST /pid' not in (logged := server.output()) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert '203.0.113.7:0 - "POST /pid HTTP/1.1" 200' in logged, logged[-1000:]


def test_a_target_that_cannot_be_served_is_a_one_line_error(service_file: Path, tmp_path: Path) -> None:
    lepton = str(Path(sys.executable).with_name("lepton"))
    (tmp_path / "raises.py").write_text("import os\n\nos.listdir('/no/such/dir')\n")
    (tmp_path / "typo.py").write_text("class A(\n")
    # a port another program listens on
    taken = socket.create_server(("127.0.0.1", 0))
    cases = [
        (["no-such-model"], "no-such-model"),
        ([f"{service_file}:Missing"], "not a Photon subclass"),
        ([f"{tmp_path}/nope.py:Slow"], "no file"),
        # a module in the current dir
        (["service:Missing"], "Missing is not a Photon subclass in service"),
        (
            [f"{tmp_path}/raises.py:A"],
            f"FileNotFoundError: [Errno 2] No such file or directory: '/no/such/dir' "
            f"({tmp_path}/raises.py, line 3)",
        ),
        ([f"{tmp_path}/typo.py:A"], f"SyntaxError: '(' was never closed ({tmp_path}/typo.py, line 1)"),
        # printed as it is: no markup, no emoji
        ([f"{tmp_path}/[/]:x:.py:A"], f"no file {tmp_path}/[/]:x:.py"),
        ([f"{service_file}:Pid", "--port", str(taken.getsockname()[1])], "Address already in use"),
    ]

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [lepton, "serve", *args, *(["--port", "0"] * ("--port" not in args))],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    with taken, ThreadPoolExecutor(4) as pool:
        for (args, says), r in zip(cases, pool.map(run, [args for args, _ in cases])):
            assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
                args,
                r.stderr,
            )
    assert load_photon(f"{service_file}:Pid").handlers().keys() == {"pid"}
    assert not is_class_target("minilm:latest") and not is_class_target("digits-cnn:2")
    assert is_class_target("lepton_ai.serve.model:TensorModelPhoton") and is_class_target("x.py:Y")


def test_workers_on_port_0_share_the_one_port_the_system_chose(
    service_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[WorkerConfig] = []
    monkeypatch.setattr(
        "lepton_ai.serve.server._supervise", lambda workers, config, options: started.append(config)
    )
    serve(f"{service_file}:Pid", port=0, workers=2)
    port = started[0].port
    # its directory is gone: nothing may use it
    assert port > 0 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    # closed again, for the workers to bind
    with socket.create_server(("127.0.0.1", port)):
        pass


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_bad_requests_and_a_burst_over_the_queue_leave_it_healthy(digits_ref: str) -> None:
    import aiohttp

    from lepton_ai import LeptonModel
    from lepton_ai.data import load

    x = load("digits", "all").features[:500]
    expected = LeptonModel.load(digits_ref).predict(x).tolist()
    bad_bodies = [
        b"{oops",
        b'{"inputs": "x"}',
        b'{"inputs": [[1, 2]]}',
        b'{"inputs": []}',
        b'{"inputs": [[NaN]]}',
        b'{"inputs": [' + b"[0]," * 10 + b'"x"]}',
        b'{"inputs": [[0]], "return_probs": "maybe"}',
        b"[]",
        b'{"inputs": [' + b"1," * 5000 + b"1]}",
        b"\xff\xfe",
    ]

    async def bad(session: aiohttp.ClientSession, url: str, n: int) -> dict[int, int]:
        codes: dict[int, int] = {}
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with (
                sem,
                session.post(
                    url, data=bad_bodies[i % len(bad_bodies)], headers={"Content-Type": "application/json"}
                ) as r,
            ):
                await r.read()
                codes[r.status] = codes.get(r.status, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
        return codes

    async def burst(session: aiohttp.ClientSession, url: str) -> list[tuple[int, object]]:
        async def one(i: int) -> tuple[int, object]:
            async with session.post(url, json={"inputs": [x[i].tolist()]}) as r:
                return r.status, await r.json()

        return await asyncio.gather(*(one(i) for i in range(500)))

    async def main(url: str, pid: int, model_pid: int) -> tuple[dict[int, int], float, float, list, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=600)) as session:
            await bad(session, url, 1000)
            await burst(session, url)
            before, model_before = _rss_mb(pid), _rss_mb(model_pid)
            codes = await bad(session, url, 10_000)
            after = _rss_mb(pid)
            answers = await burst(session, url)
            return codes, before, after, answers, _rss_mb(model_pid) - model_before

    with ServerProcess([digits_ref, "--max-queue", "16", "--max-batch-size", "8"]) as server:
        (model_pid,) = map(
            int, Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        )
        codes, before, after, answers, model_grew = asyncio.run(
            main(f"{server.url}/predict", server.proc.pid, model_pid)
        )
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
        assert httpx.post(f"{server.url}/predict", json={"inputs": [x[0].tolist()]}).json() == {
            "outputs": expected[:1]
        }
        # torch lives in the model process only: the HTTP process never loads it (~180 MB less)
        assert "libtorch" not in Path(f"/proc/{server.proc.pid}/maps").read_text()
        assert "libtorch" in Path(f"/proc/{model_pid}/maps").read_text()
    assert sum(codes.values()) == 10_000 and set(codes) <= {400, 413, 422}, codes
    assert after - before < 40, f"RSS grew from {before:.0f} MB to {after:.0f} MB over 10,000 bad requests"
    # it never sees a bad request
    assert model_grew < 40, f"the model process grew by {model_grew:.0f} MB"
    statuses = [s for s, _ in answers]
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0, statuses
    assert all(body == {"outputs": [expected[i]]} for i, (s, body) in enumerate(answers) if s == 200)
