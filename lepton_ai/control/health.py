"""The health of a recorded service, as the services page shows it: whether it answers and is ready, and its
throughput, p50/p99 latency and share of 5xx answers, read from its Prometheus `/metrics`.

Counters only say what happened since the service started; what it does now is the difference between two
readings. A `Prober` remembers each service's last reading and measures over the time since; the first
probe of a service (or the first after it restarted) covers its whole life instead, and says so
(`window_s` None)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lepton_ai.errors import one_line
from lepton_ai.store.schema import iso, utcnow
from lepton_ai.store.services import ServiceInfo

REQUESTS = "lepton_requests_total"
BUCKETS = "lepton_request_duration_seconds_bucket"
# services probed at once by `probe_all`
MAX_PARALLEL = 16


@dataclass(frozen=True, kw_only=True)
class Health:
    """A service's health when `checked_at`: figures are None where there was nothing to measure."""

    # /readyz said 200 (True) or 503 (False); None: not asked, or it answered something else
    ready: bool | None
    # it answered HTTP at all
    answering: bool
    requests_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    # the share of requests answered 5xx
    error_rate: float | None = None
    # requests answered in the window
    requests: int | None = None
    # the seconds the figures cover (since the previous probe); None: the service's whole life
    window_s: float | None = None
    # why it is not answering, or what could not be read
    error: str | None = None
    checked_at: datetime

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict (`checked_at` as ISO 8601 UTC)."""
        return {**asdict(self), "checked_at": iso(self.checked_at)}


@dataclass(frozen=True)
class Scrape:
    """One reading of a service's `/metrics`: when (monotonic seconds), its requests by status code and its
    latency histogram's cumulative counts by upper bound in seconds, all handlers summed."""

    at: float
    codes: dict[str, float]
    buckets: dict[float, float]

    def since(self, earlier: Scrape) -> Scrape | None:
        """Return what was counted between `earlier` and this reading; None if a counter went down (the
        service restarted and counts from zero again)."""
        codes = {c: n - earlier.codes.get(c, 0.0) for c, n in self.codes.items()}
        buckets = {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()}
        vanished = set(earlier.codes) - set(self.codes) or set(earlier.buckets) - set(self.buckets)
        if vanished or min([*codes.values(), *buckets.values()], default=0.0) < 0:
            return None
        return Scrape(self.at, codes, buckets)


def parse_metrics(text: str, at: float) -> Scrape:
    """Return the request counts and latency buckets in the Prometheus text `text`, read at `at`; raise
    ValueError for text that is not Prometheus's."""
    codes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS:
                code = sample.labels.get("code", "")
                codes[code] = codes.get(code, 0.0) + sample.value
            elif sample.name == BUCKETS:
                le = float(sample.labels.get("le", "nan"))
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return Scrape(at, codes, buckets)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Return the `q`-quantile (0 < q <= 1) of a histogram's cumulative buckets as Prometheus's
    histogram_quantile estimates it: linearly within the bucket it falls in, or the highest finite bound when
    that bucket is +Inf's; None without observations."""
    bounds = sorted((le, n) for le, n in buckets.items() if not math.isnan(le))
    if not bounds or bounds[-1][0] != math.inf or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if upper == math.inf:
                return lower
            # count > below: rank > 0 and the bucket before held fewer than rank
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return None


def _measured(
    ready: bool | None, counts: Scrape, seconds: float, window_s: float | None, now: datetime
) -> Health:
    """Return the health of a service that answered, from what `counts` counted over `seconds`."""
    total = sum(counts.codes.values())
    errors = sum(n for code, n in counts.codes.items() if code.startswith("5"))
    p50, p99 = quantile(0.5, counts.buckets), quantile(0.99, counts.buckets)
    return Health(
        ready=ready,
        answering=True,
        requests_per_s=total / seconds if seconds > 0 else None,
        p50_ms=None if p50 is None else p50 * 1000,
        p99_ms=None if p99 is None else p99 * 1000,
        error_rate=errors / total if total else None,
        requests=round(total),
        window_s=window_s,
        checked_at=now,
    )


def _ask(url: str, timeout_s: float) -> tuple[bool | None, httpx.Response]:
    """Return the service's readiness and its answer to GET /metrics."""
    with httpx.Client(timeout=timeout_s) as client:
        readiness = client.get(f"{url}/readyz")
        metrics = client.get(f"{url}/metrics")
    return {200: True, 503: False}.get(readiness.status_code), metrics


class Prober:
    """Probes services over HTTP, remembering each one's last `/metrics` reading so the next probe measures
    over the time between (one may be shared by threads)."""

    def __init__(self, min_window_s: float = 1.0) -> None:
        # Probes closer together than this measure from the same earlier reading: a burst of page loads still
        # gets a window long enough to mean something.
        self.min_window_s = min_window_s
        self._last: dict[int, Scrape] = {}
        self._lock = threading.Lock()

    def probe(self, service: ServiceInfo, timeout_s: float = 1.0) -> Health:
        """Return the service's health now; a service that does not answer is `answering` False with the
        reason in `error`, never an exception, and a stopped one is not asked."""
        now = utcnow()
        if service.stopped_at is not None:
            with self._lock:
                self._last.pop(service.id, None)
            return Health(
                ready=None, answering=False, error=f"stopped at {iso(service.stopped_at)}", checked_at=now
            )
        try:
            ready, metrics = _ask(service.url, timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            why = f"{type(e).__name__}: {one_line(e)}"
            return Health(ready=None, answering=False, error=why, checked_at=now)
        if metrics.status_code != 200:
            why = f"/metrics answered HTTP {metrics.status_code}"
            return Health(ready=ready, answering=True, error=why, checked_at=now)
        try:
            scrape = parse_metrics(metrics.text, time.monotonic())
        except (ValueError, KeyError) as e:
            why = f"/metrics is not Prometheus text: {one_line(e)}"
            return Health(ready=ready, answering=True, error=why, checked_at=now)
        return self._measure(service, ready, scrape, now)

    def _measure(self, service: ServiceInfo, ready: bool | None, scrape: Scrape, now: datetime) -> Health:
        """Return the health since this service's previous reading, or over its whole life without one."""
        with self._lock:
            previous = self._last.get(service.id)
            delta = None if previous is None else scrape.since(previous)
            window = None if previous is None or delta is None else scrape.at - previous.at
            if window is None or window >= self.min_window_s:
                self._last[service.id] = scrape
        if delta is not None and window is not None:
            return _measured(ready, delta, window, window, now)
        return _measured(ready, scrape, (now - service.started_at).total_seconds(), None, now)

    def probe_all(self, services: Iterable[ServiceInfo], timeout_s: float = 1.0) -> dict[int, Health]:
        """Return the health of each service by id, probing them at once (a page waits for the slowest)."""
        services = list(services)
        if not services:
            return {}
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(services))) as pool:
            healths = pool.map(lambda s: self.probe(s, timeout_s), services)
            return {s.id: h for s, h in zip(services, healths)}


_prober = Prober()


def probe(service: ServiceInfo, timeout_s: float = 1.0) -> Health:
    """Return the service's health now, measured since this process's previous probe of it (see `Prober`)."""
    return _prober.probe(service, timeout_s)
