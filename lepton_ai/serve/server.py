"""Running a service: a registry reference or `path.py:Class` on uvicorn, in one or more worker
processes. Each worker has its own listening socket on the shared port (SO_REUSEPORT, so the
kernel spreads connections evenly), and their metrics are summed through prometheus-client's
multiprocess mode."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from lepton_ai import config
from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.machine import cpu_info, free_port
from lepton_ai.serve import http
from lepton_ai.serve.app import ServeSettings, Service
from lepton_ai.serve.metrics import process_exited
from lepton_ai.serve.photon import Photon
from lepton_ai.serve.process import ProcessSpec
from lepton_ai.serve.registration import recorded, service_url
from lepton_ai.serve.target import load_photon, serving_gc

log = logging.getLogger("lepton.serve")


def _listen(host: str, port: int, shared: bool = True) -> socket.socket:
    """Return a listening socket on host:port. Shared, other workers bind it too (SO_REUSEPORT: the kernel
    spreads connections evenly, where one shared socket lets one worker take them all); not shared, it fails
    if anything else listens there, however that bound it."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(shared))
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        if sock is not None:
            sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    return sock


def _service(
    target: str, photon: Photon, settings: ServeSettings, device: str, threads: int | None
) -> Service:
    """Return the service of a serving process: the model in a process of its own when the Photon asks for
    it (eager PyTorch on CPU) or `settings.model_process` says so; the collector set for serving."""
    own = photon.model_process if settings.model_process is None else settings.model_process
    serving_gc()
    service = Service(
        photon, settings, on_ready=gc.freeze, spawn=ProcessSpec(target, device, threads) if own else None
    )
    if service.process:
        # it loads the model while this process starts its server
        service.process.spawn()
    return service


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """What a worker process is started with (through the spawn pipe, so the token never reaches the
    environment)."""

    target: str
    device: str
    threads: int | None
    settings: ServeSettings
    host: str
    port: int


def _worker(config: WorkerConfig, options: dict[str, Any]) -> None:
    """One worker process: its own model copy, event loop and listening socket on the shared port."""
    photon = load_photon(config.target, config.device, config.threads)
    sock = _listen(config.host, config.port)
    _run(_service(config.target, photon, config.settings, config.device, config.threads), sock, options)


def _run(service: Service, sock: socket.socket, options: dict[str, Any]) -> None:
    """Serve on `sock` with uvicorn until SIGTERM or Ctrl-C; exit with code 3 if it could not start."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(service, **options))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)


def _supervise(workers: int, config: WorkerConfig, options: dict[str, Any]) -> None:
    """Run `workers` worker processes, restart one that dies, and on SIGTERM or Ctrl-C let them drain and
    exit."""
    import multiprocessing

    # a clean interpreter each: no forked threads or CUDA state
    ctx = multiprocessing.get_context("spawn")

    def start() -> Any:
        p = ctx.Process(target=_worker, args=(config, dict(options)), daemon=False)
        p.start()
        return p

    procs = [start() for _ in range(workers)]
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()
        # Ctrl-C reaches them from the terminal too; a second SIGTERM is harmless to uvicorn
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping.wait(0.5):
        _replace_exited(procs, start, stopping)
    for p in procs:
        p.join()


def _replace_exited(procs: list[Any], start: Callable[[], Any], stopping: threading.Event) -> None:
    """Replace, in `procs`, each worker process that exited by a new one from `start`, unless stopping."""
    for i, p in enumerate(procs):
        # checked for each: a worker started after `stop` signalled the others would never be stopped
        if not p.is_alive() and not stopping.is_set():
            log.warning("worker %d exited with code %s: starting another", p.pid, p.exitcode)
            # its last queue depth and in-flight count would otherwise stay in the sum for good
            process_exited(p.pid)
            procs[i] = start()


def serve(
    target: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    device: str = "cpu",
    settings: ServeSettings | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve `target` until SIGTERM or Ctrl-C, then stop accepting, drain in-flight requests and exit."""
    settings = settings or ServeSettings()
    _check(workers, device)
    heartbeat_s = config.heartbeat_s()
    # workers × threads = cores
    threads = max(1, cpu_info()["cores"] // workers) if workers > 1 else None
    # fails here, in one line, if the port is taken
    sock = _listen(host, port, shared=False)
    # the one the system chose for --port 0
    port = sock.getsockname()[1]
    try:
        # and here if the target cannot be served
        photon = load_photon(target, device, threads)
    except BaseException:
        sock.close()
        raise
    options = _uvicorn_options(settings, log_level, access_log)
    log.info(
        "serving %s on http://%s:%d (%d worker%s; API docs at /docs)",
        target,
        host,
        port,
        workers,
        "s" if workers > 1 else "",
    )
    # for the dashboard's services page
    with recorded(target, service_url(host, port), heartbeat_s):
        if workers == 1:
            _run(_service(target, photon, settings, device, threads), sock, options)
            return
        # it proved the port free: each worker binds its own
        sock.close()
        _serve_workers(workers, WorkerConfig(target, device, threads, settings, host, port), options)


def _check(workers: int, device: str) -> None:
    """Refuse, in one line, a worker count or device that cannot be served."""
    if workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {workers}")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InvalidInputError(f"--device must be cpu or cuda, got {device!r}")
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError("--device cuda: no CUDA GPU is visible on this machine")
        if workers != 1:
            raise InvalidInputError(
                "a GPU is served by one worker (it batches for the whole device): use --workers 1"
            )


def _uvicorn_options(settings: ServeSettings, log_level: str, access_log: bool) -> dict[str, Any]:
    """Return uvicorn's options for a serving process."""
    # X-Forwarded-For is read only for the access log, the one place a client's address shows: uvicorn's
    # proxy-headers middleware parses the peer's address on every request (its cost: benchmarks/RESULTS.md).
    return {
        "log_level": log_level,
        "access_log": access_log,
        "proxy_headers": access_log,
        "timeout_graceful_shutdown": int(settings.timeout_s) + 5,
        "http": http.protocol(),
    }


def _serve_workers(workers: int, config: WorkerConfig, options: dict[str, Any]) -> None:
    """Supervise `workers` workers, their metrics gathered in a directory that lives as long as they do."""
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    with tempfile.TemporaryDirectory(prefix="lepton-metrics-") as metrics_dir:
        # set before the workers import prometheus-client
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            _supervise(workers, config, options)
        finally:
            # the directory goes at the end of this block: nothing started later may write there
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR")
            if before is not None:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = before


class ServerProcess:
    """A server in a child process (`lepton serve ARGS` by default), ready on entering `with`,
    stopped with SIGTERM (drain, then exit) at the end. `url` is its base URL."""

    def __init__(
        self,
        args: list[str],
        port: int | None = None,
        command: list[str] | None = None,
        ready_path: str = "/readyz",
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # `lepton serve ARGS --port PORT`
        if command is None:
            command = [sys.executable, "-m", "lepton_ai.cli.main", "serve", *args, "--port", str(self.port)]
        else:
            # any server: "{port}" in its arguments is replaced
            command = [c.replace("{port}", str(self.port)) for c in [*command, *args]]
        self.cmd = command
        self.ready_path, self.timeout, self.env = ready_path, timeout, env
        self.proc: subprocess.Popen | None = None
        # Open for the server's whole life: closed in __exit__.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LeptonError(
                    f"the server exited with code {self.proc.returncode}: {self.output()[-2000:]}"
                )
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise LeptonError(f"the server was not ready within {self.timeout:g} s: {self.output()[-2000:]}")

    def ready(self) -> bool:
        """Return whether the server answers 200 at its ready path."""
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def output(self) -> str:
        """Return what the server printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, timeout: float = 60.0) -> int | None:
        """Send SIGTERM to the server's process group, wait for it to exit; return its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.log.close()
