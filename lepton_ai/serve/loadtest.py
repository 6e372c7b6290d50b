"""A load generator for HTTP services: closed loop (N concurrent clients, each sending as soon as
its last answer came) or open loop (`rate` requests per second on a fixed schedule, latency
counted from the scheduled time so a slow server cannot hide its queueing).

It uses aiohttp rather than httpx: on one core it sends ~10,000 requests/s where httpx's
async client sends a few hundred, and a load generator must cost less than what it measures."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

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


async def _send(session: Any, url: str, body: bytes, headers: dict[str, str], rec: _Recorder, start: float) -> None:
    import aiohttp

    try:
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            rec.add(time.perf_counter() - start, r.status)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        rec.add(time.perf_counter() - start, "timeout" if isinstance(e, asyncio.TimeoutError) else "connection")
        await asyncio.sleep(0.01)  # a refused connection must not become a busy loop


async def _run(url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float, warmup: float,
               rate: float | None, timeout: float) -> tuple[_Recorder, float]:
    import aiohttp

    rec = _Recorder()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        begin = time.perf_counter()
        measure_from, end = begin + warmup, begin + warmup + duration

        async def recorder_switch() -> None:
            await asyncio.sleep(warmup)
            rec.recording = True

        switch = asyncio.ensure_future(recorder_switch())
        if rate is None:
            async def client() -> None:
                while time.perf_counter() < end:
                    await _send(session, url, body, headers, rec, time.perf_counter())

            await asyncio.gather(*(client() for _ in range(concurrency)))
        else:
            slots, tasks = asyncio.Semaphore(concurrency), set()

            async def one(at: float) -> None:
                async with slots:
                    await _send(session, url, body, headers, rec, at)

            i = 0
            while (at := begin + i / rate) < end:
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(one(at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)
        switch.cancel()
        return rec, time.perf_counter() - measure_from


def load_test(url: str, payload: Any, *, handler: str = "predict", concurrency: int = 32, duration: float = 10.0,
              warmup: float = 1.0, rate: float | None = None, token: str | None = None,
              timeout: float = 60.0) -> dict[str, Any]:
    """Load `url`/`handler` with `payload` (a JSON-able body or raw bytes); return throughput,
    latency percentiles (ms) and errors by status code, measured after `warmup` seconds."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    per_request = examples_per_request(json.loads(body) if isinstance(payload, bytes) else payload)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    target = f"{url.rstrip('/')}/{handler.lstrip('/')}"
    rec, elapsed = runner(_run(target, body, headers, concurrency, duration, warmup, rate, timeout))
    lat = np.asarray(rec.latencies) * 1000
    ok = len(lat)
    pct = (lambda q: round(float(np.percentile(lat, q)), 3)) if ok else (lambda q: None)
    return {
        "url": target, "concurrency": concurrency, "rate": rate, "duration_s": round(elapsed, 3),
        "requests": ok + sum(rec.errors.values()), "ok": ok, "examples_per_request": per_request,
        "requests_per_s": round(ok / elapsed, 1), "examples_per_s": round(ok * per_request / elapsed, 1),
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99),
                       "mean": round(float(lat.mean()), 3) if ok else None,
                       "max": round(float(lat.max()), 3) if ok else None},
        "errors": dict(sorted(rec.errors.items())),
    }
