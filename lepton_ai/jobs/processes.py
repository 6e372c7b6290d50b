"""The local worker's processes: the lock that makes one worker per LEPTON_HOME, starting a detached
worker, and finding, killing and tying to their worker the processes of a job (by the marker each carries
in its environment, so a job's grandchildren are found too)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lepton_ai import config

HOST = socket.gethostname()
_PR_SET_PDEATHSIG = 1


def lock_path() -> Path:
    """Return the lock file a running worker holds (the kernel drops it when the worker dies)."""
    return config.home() / "worker.lock"


@contextlib.contextmanager
def worker_lock(wait_s: float = 0.0) -> Iterator[bool]:
    """Hold the worker lock while inside; yield False when another worker holds it for more than `wait_s`."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(path, "a+") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{HOST}:{os.getpid()}\n")
            f.flush()
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def worker_running() -> bool:
    """Return whether a worker holds this LEPTON_HOME's lock."""
    with worker_lock() as got:
        return not got


def worker_pid() -> int | None:
    """Return the pid of the worker holding this LEPTON_HOME's lock; None when none does."""
    if not worker_running():
        return None
    # written by `worker_lock` as HOST:PID
    _, _, pid = lock_path().read_text().strip().rpartition(":")
    return int(pid)


def start_worker(idle_exit_s: float = 60.0) -> int | None:
    """Start a detached `lepton worker` unless one is running; return its pid (None if one was running)."""
    if worker_running():
        return None
    log = config.home() / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lepton_ai.cli.main", "worker", "--idle-exit", str(idle_exit_s)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def job_key(db_url: str, job_id: int) -> str:
    """Return the marker every process of a job carries in its environment (LEPTON_JOB_KEY)."""
    return f"{hashlib.sha256(db_url.encode()).hexdigest()[:12]}-{job_id}"


def kill_job_processes(key: str, sig: int = signal.SIGKILL) -> int:
    """Send `sig` to every process whose environment carries LEPTON_JOB_KEY=`key`; return how many."""
    marker, n = f"LEPTON_JOB_KEY={key}\0".encode(), 0
    for pid_dir in Path("/proc").glob("[0-9]*"):
        pid = int(pid_dir.name)
        if pid == os.getpid():
            continue
        try:
            if marker in (pid_dir / "environ").read_bytes():
                os.kill(pid, sig)
                n += 1
        except (OSError, ValueError):
            # gone, or not ours to read
            continue
    return n


def worker_alive(worker: str | None) -> bool:
    """Return whether the worker named "host:pid" still runs (always True for another host's worker)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != HOST or not pid.isdigit():
        return host != HOST and bool(host)
    try:
        # a live `lepton worker`, not a reused pid
        return b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def die_with_parent(parent: int) -> None:
    """In the child, before exec: get SIGKILL when the worker dies (Linux), so no job outlives it unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    # the worker died before prctl took effect
    if os.getppid() != parent:
        os._exit(1)
