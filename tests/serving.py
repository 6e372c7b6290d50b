"""Servers the tests share: a tiny Photon, `lepton serve` found through the record it writes in the
registry, and a worker's gauges."""

from __future__ import annotations

import sys
from typing import Any

from lepton_ai.serve.server import ServerProcess
from lepton_ai.store import ServiceInfo, Services

TINY_PHOTON = """
from lepton_ai.serve import Photon, handler

class Tiny(Photon):
    @handler
    def square(self, x: float) -> float:
        if x < 0:
            raise RuntimeError("a bug that negative numbers find")
        return x * x
"""


class RecordedServer(ServerProcess):
    """`lepton serve ARGS --port 0` in a child process that beats every 0.2 s, found through the record it
    writes in the registry: `info` is that record as first read, `url` where it answers."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "lepton_ai.cli.main", "serve", "--port", "0"]
        super().__init__(args, command=command, timeout=60, env={"LEPTON_HEARTBEAT_S": "0.2", **(env or {})})
        self.info: ServiceInfo | None = None

    def ready(self) -> bool:
        """Return whether the server recorded itself and answers at the URL it recorded."""
        if self.info is None:
            assert self.proc is not None
            self.info = next((s for s in Services().list() if s.pid == self.proc.pid), None)
            if self.info is None:
                return False
            self.url = self.info.url
        return super().ready()

    def record(self) -> ServiceInfo:
        """Return the server's record as it is now."""
        assert self.info is not None
        return Services().get(self.info.id)


def worker_gauges(inflight: float, depth: float, stay: Any = None) -> None:
    """Set the gauges a serving worker sets (in a spawned process), then exit, or first wait for `stay`."""
    from lepton_ai.serve.metrics import Metrics

    metrics = Metrics()
    metrics.inflight.set(inflight)
    metrics.queue_depth.labels("work").set(depth)
    if stay is not None:
        stay.wait(30)
