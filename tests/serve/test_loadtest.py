"""The load generator against bare HTTP servers that answer in every way HTTP allows (real
servers are loaded in tests/cli/test_serve_cli.py): keep-alive, chunked bodies, closed
connections, silence, errors, and latency counted from the schedule in open loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lepton_ai.serve.loadtest import load_test

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}"
HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK
# the body ends with the connection
UNTIL_CLOSE = b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n{}"


@contextlib.contextmanager
def bare_server(
    answer: Callable[[], bytes | None], delay: float = 0.0
) -> Iterator[tuple[str, dict[str, int]]]:
    """Serve every request with `answer()` (None: say nothing, hold the connection) after `delay`
    seconds; yield the URL and counts of connections and requests."""
    counts = {"connections": 0, "requests": 0}

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            counts["connections"] += 1
            while line := self.rfile.readline():
                length = 0
                while line not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                    line = self.rfile.readline()
                assert b'"inputs"' in self.rfile.read(length)
                counts["requests"] += 1
                time.sleep(delay)
                reply = answer()
                if reply is None:
                    time.sleep(2)
                    return
                self.wfile.write(reply)
                if b"Connection: close" in reply:
                    return

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()


def load(url: str, **options) -> dict:
    return load_test(
        url, {"inputs": [[1.0, 2.0]]}, **{"concurrency": 4, "duration": 0.5, "warmup": 0, **options}
    )


@pytest.mark.parametrize("reply", [OK, CHUNKED, HINTS], ids=["content-length", "chunked", "103-then-200"])
def test_keeps_connections_alive_and_reads_whole_answers(reply: bytes) -> None:
    with bare_server(lambda: reply) as (url, counts):
        r = load(url)
    assert r["ok"] > 50 and r["errors"] == {} and r["ok"] == r["requests"]
    # one connection per client
    assert counts["connections"] == 4 and counts["requests"] >= r["requests"]


@pytest.mark.parametrize("reply", [CLOSE, UNTIL_CLOSE], ids=["content-length", "body-until-close"])
def test_reconnects_when_the_server_closes_each_connection(reply: bytes) -> None:
    with bare_server(lambda: reply) as (url, counts):
        r = load(url)
    assert r["ok"] > 10 and r["errors"] == {}
    assert counts["connections"] >= r["requests"]


def test_counts_error_statuses_and_silence() -> None:
    with bare_server(lambda: BUSY) as (url, _):
        busy = load(url)
    with bare_server(lambda: None) as (url, _):
        silent = load(url, timeout=0.2)
    assert busy["ok"] == 0 and busy["errors"]["503"] == busy["requests"] > 10
    assert silent["ok"] == 0 and silent["errors"]["timeout"] >= 4 and silent["latency_ms"]["p99"] is None


def test_open_loop_counts_latency_from_the_schedule() -> None:
    # One client, 40 ms per answer, 100 requests/s asked: the schedule runs ahead of the server, and the
    # latency must show the queueing (counted from when each request was due), not only the 40 ms.
    with bare_server(lambda: OK, delay=0.04) as (url, _):
        r = load(url, concurrency=1, duration=1.0, rate=100)
    assert 15 <= r["requests"] <= 30
    assert r["latency_ms"]["p50"] > 100 and r["latency_ms"]["max"] > 300


def test_open_loop_does_not_count_its_own_timer_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Timers that fire 30 ms late (event loops round them to the millisecond; exaggerated here) against a
    # server that answers at once, at a rate its clients keep up with: the lateness is the generator's and
    # must not show as latency.
    sleep = asyncio.sleep

    async def late(delay: float) -> None:
        await sleep(delay + 0.03)

    monkeypatch.setattr(asyncio, "sleep", late)
    with bare_server(lambda: OK) as (url, _):
        r = load(url, concurrency=8, duration=1.0, rate=50)
    assert r["ok"] >= 30 and r["errors"] == {}
    assert r["latency_ms"]["p50"] < 15


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
def test_runs_as_sched_batch_on_the_cpus_asked_and_gives_the_thread_back_as_it_was() -> None:
    # Its wakeups must not preempt a server on the same cores, and it keeps to the CPUs it is given; the
    # caller's thread is unchanged afterwards.
    me, before, seen, done = threading.get_native_id(), os.sched_getscheduler(0), set(), threading.Event()
    cpus_before, one = os.sched_getaffinity(0), {max(os.sched_getaffinity(0))}

    def watch() -> None:
        while not done.is_set():
            seen.add((os.sched_getscheduler(me), frozenset(os.sched_getaffinity(me))))
            time.sleep(0.005)

    with bare_server(lambda: OK) as (url, _):
        watcher = threading.Thread(target=watch)
        watcher.start()
        r = load(url, cpus=one)
        done.set()
        watcher.join()
    assert r["ok"] > 50 and (os.SCHED_BATCH, frozenset(one)) in seen and before != os.SCHED_BATCH
    assert os.sched_getscheduler(0) == before and os.sched_getaffinity(0) == cpus_before
