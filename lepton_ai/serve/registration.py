"""A serving process's record in the registry (for the dashboard's services page): written once it
listens, refreshed by a heartbeat every LEPTON_HEARTBEAT_S seconds, marked stopped when it ends. All of it
happens on a daemon thread, so a slow or unreachable registry never delays or stops the service: it costs
one warning line. The store is imported there too: worker processes, which import this module's importer,
never load it, and the server's start does not wait for it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from lepton_ai.errors import NotFoundError, one_line

if TYPE_CHECKING:
    from lepton_ai.store.services import Services

log = logging.getLogger("lepton.serve")
# how long an ending process waits for the registry to note that it stopped
STOP_WAIT_S = 5.0
_WILDCARDS = ("", "0.0.0.0", "::")


def service_url(host: str, port: int) -> str:
    """Return the URL a server bound to host:port is reached at (this machine's name for every interface)."""
    if host in _WILDCARDS:
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Heartbeat:
    """Records this process serving `target` at `url` from a daemon thread, then notes every `interval_s`
    seconds that it is alive, until `stop` marks it stopped."""

    def __init__(self, target: str, url: str, interval_s: float) -> None:
        self.target, self.url, self.interval_s = target, url, interval_s
        # the record's id, once written
        self.id: int | None = None
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="lepton-heartbeat", daemon=True)

    def start(self) -> None:
        """Start recording (returns at once)."""
        self._thread.start()

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop beating and mark the service stopped, waiting for the registry at most `wait_s` seconds."""
        self._stopping.set()
        self._thread.join(wait_s)

    def _run(self) -> None:
        self._write(self._beat)
        while not self._stopping.wait(self.interval_s):
            self._write(self._beat)
        if self.id is not None:
            service_id = self.id
            self._write(lambda services: services.stopped(service_id))

    def _beat(self, services: Services) -> None:
        """Note that the service is alive; record it first if it is not (yet, or any more) recorded."""
        from lepton_ai.store.services import service_name

        if self.id is not None:
            try:
                services.heartbeat(self.id)
                return
            except NotFoundError:
                # its record was deleted: write a new one
                self.id = None
        name = service_name(self.target)
        self.id = services.record("serve", name, self.url, model_ref=self.target, pid=os.getpid()).id

    def _write(self, change: Callable[[Services], object]) -> None:
        """Apply `change` to the registry; warn once when the registry cannot be written, until it can."""
        from lepton_ai.store.services import UNAVAILABLE, Services

        try:
            change(Services())
        except UNAVAILABLE as e:
            if not self._failing:
                log.warning("this service is not recorded in the registry (%s); serving goes on", one_line(e))
            self._failing = True
            return
        if self._failing:
            log.info("this service is recorded in the registry again")
        self._failing = False


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds the serving code to `recorded`, which ends the process as the signal would
    have."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextlib.contextmanager
def recorded(target: str, url: str, interval_s: float) -> Iterator[Heartbeat]:
    """Keep this process recorded as serving `target` at `url` while the block runs, then mark it stopped.
    SIGTERM (uvicorn re-sends it to itself once drained) ends the block: the record is closed first, then the
    signal is delivered again, as if we had not been there."""
    heartbeat = Heartbeat(target, url, interval_s)
    heartbeat.start()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main:
        signal.signal(signal.SIGTERM, _terminated)
    terminated = False
    try:
        yield heartbeat
    except _Terminated:
        terminated = True
    finally:
        if main:
            # a second SIGTERM must not cut the record's last write short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        heartbeat.stop()
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if terminated:
        signal.raise_signal(signal.SIGTERM)
