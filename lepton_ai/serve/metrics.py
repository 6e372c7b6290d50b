"""Prometheus metrics of one service. With several worker processes, prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `serve`) sums them on every scrape."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The service's counters, histograms and gauges, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # multiprocess values live in files, not a registry
        reg = None if _multiprocess() else self.registry
        self.requests = Counter(
            "lepton_requests_total",
            "Requests answered, by handler and HTTP status code.",
            ["handler", "code"],
            registry=reg,
        )
        self.duration = Histogram(
            "lepton_request_duration_seconds",
            "Time from request read to response.",
            ["handler"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "lepton_batch_size", "Examples per model call.", ["handler"], buckets=_BATCH_BUCKETS, registry=reg
        )
        self.queue_depth = Gauge(
            "lepton_queue_depth",
            "Requests waiting for their handler.",
            ["handler"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.inflight = Gauge(
            "lepton_inflight_requests", "Requests being handled.", registry=reg, multiprocess_mode="livesum"
        )

        self._children: dict[tuple[str, int], Any] = {}
        self._durations: dict[str, Any] = {}

    def answered(self, handler: str, code: int, seconds: float) -> None:
        """Count one answer and its duration (label children cached: this runs for every request)."""
        counter = self._children.get((handler, code))
        if counter is None:
            counter = self._children[(handler, code)] = self.requests.labels(handler, str(code))
        counter.inc()
        duration = self._durations.get(handler)
        if duration is None:
            duration = self._durations[handler] = self.duration.labels(handler)
        duration.observe(seconds)

    def gauge(self, gauge: Any, read: Callable[[], float]) -> Callable[[], None]:
        """Tie `gauge` to `read`; return what to call when the value may have changed. In one
        process the gauge is read at scrape time (free per request); across workers it is set."""
        if _multiprocess():
            return lambda: gauge.set(read())
        gauge.set_function(read)
        return lambda: None

    def render(self) -> bytes:
        """Return the metrics in Prometheus text format (all workers' when there are several)."""
        if _multiprocess():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def process_exited(pid: int) -> None:
    """Drop the live gauges (queue depth, requests in flight) of worker `pid`, which exited, from the sum."""
    if _multiprocess():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
