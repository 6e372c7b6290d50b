"""Probing a recorded service: readiness, throughput, latency quantiles and 5xx share from its /metrics,
measured between two probes; a service that stopped, hangs or is something else is reported, never raised."""

from __future__ import annotations

import functools
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from lepton_ai.control.health import Prober, parse_metrics, probe, quantile
from lepton_ai.serve.metrics import Metrics
from lepton_ai.store import ServiceInfo, Services
from tests.serving import RecordedServer


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    buckets = {0.1: 0.0, 0.2: 10.0, 0.5: 10.0, math.inf: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.15)
    assert quantile(0.99, buckets) == pytest.approx(0.199)
    # the first bucket starts at 0
    assert quantile(0.5, {0.01: 4.0, math.inf: 4.0}) == pytest.approx(0.005)
    # in +Inf's bucket: the highest finite bound
    assert quantile(0.99, {0.1: 5.0, 1.0: 9.0, math.inf: 10.0}) == 1.0
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None and quantile(0.5, {}) is None


def test_metrics_are_summed_over_handlers_and_a_restart_has_no_difference() -> None:
    metrics = Metrics()
    metrics.answered("a", 200, 0.003)
    metrics.answered("a", 200, 0.004)
    earlier = parse_metrics(metrics.render().decode(), at=5.0)
    metrics.answered("b", 500, 0.2)
    metrics.answered("a", 422, 0.0004)
    scrape = parse_metrics(metrics.render().decode(), at=10.0)
    assert scrape.codes == {"200": 2.0, "500": 1.0, "422": 1.0}
    assert (scrape.buckets[0.0005], scrape.buckets[0.005], scrape.buckets[math.inf]) == (1.0, 3.0, 4.0)
    between = scrape.since(earlier)
    assert between is not None and between.at == 10.0
    assert between.codes == {"200": 0.0, "500": 1.0, "422": 1.0}
    assert (
        between.buckets[0.0005],
        between.buckets[0.1],
        between.buckets[0.25],
        between.buckets[math.inf],
    ) == (1.0, 1.0, 2.0, 2.0)
    # counters that went down: the service restarted
    assert earlier.since(scrape) is None
    with pytest.raises(ValueError):
        parse_metrics("<html>not metrics</html>", 0.0)


def send(url: str, ok: int, failing: int, invalid: int) -> None:
    """Send the tiny Photon `ok` requests it answers 200, `failing` it answers 500 and `invalid` 422."""
    with httpx.Client(base_url=url) as client:
        codes = [client.post("/square", json={"x": x}).status_code for x in range(ok)]
        codes += [client.post("/square", json={"x": -1}).status_code for _ in range(failing)]
        codes += [client.post("/square", json={"x": "three"}).status_code for _ in range(invalid)]
    assert codes == [200] * ok + [500] * failing + [422] * invalid


def test_two_probes_measure_what_the_service_did_between_them(
    tiny_photon: str, recorded_server: type[RecordedServer]
) -> None:
    # each probe measures from the previous one; the other keeps its first reading for a minute
    each, patient = Prober(min_window_s=0), Prober(min_window_s=60)
    with recorded_server([tiny_photon]) as server:
        assert server.info is not None
        info = server.info
        first = each.probe(info)
        assert (first.answering, first.ready, first.error, first.window_s) == (True, True, None, None)
        assert (first.requests, first.requests_per_s, first.p50_ms, first.error_rate) == (0, 0, None, None)
        patient.probe(info)
        send(server.url, ok=30, failing=5, invalid=5)
        second = each.probe(info)
        assert second.requests == 40 and second.window_s is not None and second.window_s > 0
        assert second.requests_per_s is not None and second.requests_per_s > 0
        assert second.p50_ms is not None and second.p99_ms is not None and 0 < second.p50_ms <= second.p99_ms
        assert second.error_rate == 5 / 40
        waiting = patient.probe(info)
        assert waiting.requests == 40 and waiting.error_rate == 5 / 40
        # nothing happened since
        third, later = each.probe(info), patient.probe(info)
        assert (third.requests, third.requests_per_s, third.p50_ms, third.error_rate) == (0, 0, None, None)
        assert later.requests == 40 and (later.window_s or 0) > (waiting.window_s or math.inf)
        server.stop()
        # the record read while it ran says it runs: it is asked, and does not answer
        gone = each.probe(info)
        assert (gone.answering, gone.ready, gone.requests_per_s) == (False, None, None)
        assert gone.error is not None and gone.error.startswith("ConnectError")
    stopped = each.probe(server.record())
    assert not stopped.answering and stopped.error is not None and stopped.error.startswith("stopped at")
    assert json.loads(json.dumps(stopped.to_dict()))["checked_at"].endswith("Z")


def test_a_service_that_hangs_is_not_answering_once_the_timeout_passed() -> None:
    services = Services()
    # they accept connections (the kernel does) and never answer
    with socket.create_server(("127.0.0.1", 0)) as one, socket.create_server(("127.0.0.1", 0)) as two:
        hung = [
            services.record("serve", "hung", f"http://127.0.0.1:{s.getsockname()[1]}") for s in (one, two)
        ]
        start = time.monotonic()
        healths = Prober().probe_all(hung, timeout_s=0.3)
        took = time.monotonic() - start
    assert sorted(healths) == sorted(s.id for s in hung) and took < 1.5
    for health in healths.values():
        assert not health.answering and health.error is not None and "Timeout" in health.error


@pytest.fixture
def not_a_service(tmp_path: Path) -> Iterator[ServiceInfo]:
    """A web server that is not a Lepton service (it answers 404 to /readyz and /metrics), as recorded."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=tmp_path)
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield Services().record(
            "deploy", "web", f"http://127.0.0.1:{server.server_address[1]}", deployment="x"
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_without_lepton_metrics_answers_and_says_what_is_missing(not_a_service: ServiceInfo) -> None:
    health = probe(not_a_service)
    assert (health.answering, health.ready, health.requests_per_s) == (True, None, None)
    assert health.error == "/metrics answered HTTP 404"
