"""A load generator for HTTP services: closed loop (N concurrent clients, each sending as soon as
its last answer came) or open loop (`rate` requests per second on a fixed schedule). In open loop
a request whose client was still waiting for an earlier answer when it fell due is timed from its
scheduled time, so a slow server cannot hide its queueing; one whose client was idle is timed from
when it is sent, because the event loop's timers are only millisecond-precise (uvloop's fire up to
0.5 ms early or late, asyncio's up to 1 ms late) and that error is the generator's, not the server's.

A load generator must cost less than what it measures, and on a small machine it shares the
cores with the server. Each client is one keep-alive connection that writes the request,
serialised once, and reads the answer with httptools (the C parser uvicorn itself uses): several times
less CPU a request than aiohttp's or httpx's clients. It also runs as SCHED_BATCH (Linux): a process
woken with work would otherwise preempt the one running, and a load generator wakes thousands of times
a second, so it preempted the very server it measured (the figures are in benchmarks/RESULTS.md).
Its own waits for a core still count in the latencies it reports, against the server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np


def examples_per_request(payload: Any) -> int:
    """Return how many examples one request carries: the length of the body's first list field."""
    if isinstance(payload, dict):
        for value in payload.values():
            if isinstance(value, list):
                return len(value)
    return 1


class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.recording = False

    def add(self, seconds: float, status: int | str) -> None:
        if not self.recording:
            return
        if status == 200:
            self.latencies.append(seconds)
        else:
            self.errors[str(status)] += 1


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: `ask` sends the request and returns the answer's status."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.parse_errors = (httptools.HttpParserError, httptools.HttpParserUpgrade)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future | None = None
        self.reusable = True
        # of the answer being read: its status, whether its length is known
        self.status, self.framed = 0, False

    async def ask(self, request: bytes, timeout: float) -> int:
        """Send `request`; return the status code once the whole answer is read."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.answer = answer = loop.create_future()
        timer = loop.call_later(timeout, self._fail, asyncio.TimeoutError())
        self.transport.write(request)
        try:
            return await answer
        finally:
            timer.cancel()

    # asyncio.Protocol and httptools callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.parse_errors as e:
            self._fail(ConnectionError(f"bad HTTP answer: {e!r}"))

    def on_message_begin(self) -> None:
        self.status, self.framed = 0, False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and self.status != 101:
            # an interim answer (100 Continue, 103 Early Hints): the final one follows
            return
        self.reusable = self.parser.should_keep_alive()
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.status)
        self.status = 0

    def connection_lost(self, exc: Exception | None) -> None:
        # a body that ends with the connection: complete
        if exc is None and self.status and not self.framed:
            self.on_message_complete()
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


@dataclass(frozen=True)
class _Target:
    """Where to connect, and the bytes of the request every client sends."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    request: bytes

    @classmethod
    def post(cls, url: str, body: bytes, headers: dict[str, str]) -> _Target:
        """Return the target of a POST of `body` to `url`."""
        parts = urlsplit(url)
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        head = {"Host": parts.netloc, **headers, "Content-Length": str(len(body))}
        lines = [
            f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            *(f"{k}: {v}" for k, v in head.items()),
        ]
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or (443 if tls else 80),
            tls,
            ("\r\n".join(lines) + "\r\n\r\n").encode() + body,
        )


async def _client(
    target: _Target, next_slot: Callable[[], float | None], rec: _Recorder, timeout: float
) -> None:
    """One client: take the next send time, send then, record the latency from it; reconnect on errors."""
    loop, conn = asyncio.get_running_loop(), None
    while (at := next_slot()) is not None:
        delay = at - time.perf_counter()
        # idle until its slot: timed from the send (see above)
        if delay > 0:
            await asyncio.sleep(delay)
            at = time.perf_counter()
        try:
            if conn is None or not conn.reusable:
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                conn = (
                    await asyncio.wait_for(
                        loop.create_connection(_Connection, target.host, target.port, ssl=target.tls), timeout
                    )
                )[1]
            status = await conn.ask(target.request, timeout)
        except (OSError, asyncio.TimeoutError) as e:
            rec.add(
                time.perf_counter() - at, "timeout" if isinstance(e, asyncio.TimeoutError) else "connection"
            )
            conn = None
            # a refused connection must not become a busy loop
            await asyncio.sleep(0.01)
        else:
            rec.add(time.perf_counter() - at, status)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def _run(
    target: _Target, concurrency: int, duration: float, warmup: float, rate: float | None, timeout: float
) -> tuple[_Recorder, float]:
    rec = _Recorder()
    begin = time.perf_counter()
    measure_from, end = begin + warmup, begin + warmup + duration
    # closed loop: each client sends again at once
    if rate is None:

        def next_slot() -> float | None:
            now = time.perf_counter()
            return now if now < end else None
    else:
        # open loop: slot i is due at begin + i / rate; whichever client is free takes it, late if need be
        count = itertools.count()

        def next_slot() -> float | None:
            at = begin + next(count) / rate
            return at if at < end and time.perf_counter() < end else None

    asyncio.get_running_loop().call_later(warmup, setattr, rec, "recording", True)
    await asyncio.gather(*(_client(target, next_slot, rec, timeout) for _ in range(concurrency)))
    return rec, time.perf_counter() - measure_from


@contextlib.contextmanager
def _yielding(cpus: set[int] | None = None) -> Iterator[None]:
    """Run this thread as SCHED_BATCH, and on `cpus` if given, then as before: its wakeups do not preempt a
    server on the same cores. Only from the normal policy (a real-time thread could not be given back its
    policy unprivileged)."""
    try:
        switched = os.sched_getscheduler(0) == os.SCHED_OTHER
        if switched:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        # not Linux, or not allowed here: run as we are
        switched = False
    before = os.sched_getaffinity(0) if cpus else None
    if cpus:
        # this thread only: 0 is the calling thread
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        if before:
            os.sched_setaffinity(0, before)
        if switched:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def load_test(
    url: str,
    payload: Any,
    *,
    handler: str = "predict",
    concurrency: int = 32,
    duration: float = 10.0,
    warmup: float = 1.0,
    rate: float | None = None,
    token: str | None = None,
    timeout: float = 60.0,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    """Load `url`/`handler` with `payload` (a JSON-able body or raw bytes); return throughput,
    latency percentiles (ms) and errors by status code, measured after `warmup` seconds. `cpus`: run
    the generator on these CPUs only (a server on the same machine keeps the others)."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    per_request = examples_per_request(json.loads(body) if isinstance(payload, bytes) else payload)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    target = f"{url.rstrip('/')}/{handler.lstrip('/')}"
    # The caller's objects set aside (unless it froze its own): a full collection mid-run, which walked
    # them all (with torch loaded, long enough to time every answer meanwhile late), walks only the run's.
    own = not gc.get_freeze_count()
    if own:
        gc.freeze()
    try:
        with _yielding(cpus):
            rec, elapsed = runner(
                _run(_Target.post(target, body, headers), concurrency, duration, warmup, rate, timeout)
            )
    finally:
        if own:
            gc.unfreeze()
    lat = np.asarray(rec.latencies) * 1000
    ok = len(lat)
    pct = (lambda q: round(float(np.percentile(lat, q)), 3)) if ok else (lambda q: None)
    return {
        "url": target,
        "concurrency": concurrency,
        "rate": rate,
        "duration_s": round(elapsed, 3),
        "requests": ok + sum(rec.errors.values()),
        "ok": ok,
        "examples_per_request": per_request,
        "requests_per_s": round(ok / elapsed, 1),
        "examples_per_s": round(ok * per_request / elapsed, 1),
        "latency_ms": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "mean": round(float(lat.mean()), 3) if ok else None,
            "max": round(float(lat.max()), 3) if ok else None,
        },
        "errors": dict(sorted(rec.errors.items())),
    }
