"""The local backend: one worker per machine runs queued jobs as subprocesses within the
machine's CPU, GPU and memory, logs each attempt to the artifact store, cancels by process
group, and on start re-queues the jobs a killed worker left behind (its lock and the jobs'
processes are found through jobs/processes.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from lepton_ai import config
from lepton_ai.errors import InvalidInputError, one_line
from lepton_ai.jobs.processes import (
    HOST,
    die_with_parent,
    job_key,
    kill_job_processes,
    lock_path,
    start_worker,
    worker_alive,
    worker_lock,
)
from lepton_ai.jobs.queue import JobInfo, JobQueue
from lepton_ai.jobs.spec import CommandSpec, JobSpec, TrainSpec
from lepton_ai.machine import cpu_info
from lepton_ai.store.artifacts import ArtifactStore


@dataclass(frozen=True)
class Capacity:
    """What the worker may hand out: CPU slots, GPU indices and bytes of memory."""

    cpus: float
    gpus: int
    memory: int

    @classmethod
    def of_machine(
        cls, cpus: float | None = None, gpus: int | None = None, memory: int | None = None
    ) -> Capacity:
        """Return this machine's capacity, each part overridable."""
        if gpus is None:
            from lepton_ai.machine import gpu_info

            gpus = len(gpu_info())
        info = cpu_info()
        return cls(
            cpus=float(info["cores"] if cpus is None else cpus),
            gpus=gpus,
            memory=int(info["memory_bytes"] or 0) if memory is None else memory,
        )

    def check(self, spec: JobSpec) -> None:
        """Raise when `spec` could never fit this capacity, naming the resource."""
        r = spec.resources
        for what, need, have in (
            ("cpus", r.cpus, self.cpus),
            ("gpus", r.gpus, self.gpus),
            ("memory bytes", r.memory_bytes, self.memory or r.memory_bytes),
        ):
            if need > have:
                raise InvalidInputError(
                    f"resources.{what.split()[0]}: the job asks for {need:g} {what} but the "
                    f"local worker has {have:g}"
                )


def log_key(job_id: int, attempt: int) -> str:
    """Return the artifact-store key of one attempt's log."""
    return f"jobs/{job_id}/attempt-{attempt}.log"


def produced_versions(log_tail: str) -> list[str]:
    """Return the NAME:VERSION refs announced by the JSON document a `lepton … --json` command printed
    last."""
    start = log_tail.rfind("\n{")
    start = start + 1 if start >= 0 else (0 if log_tail.startswith("{") else -1)
    if start < 0:
        return []
    try:
        doc = json.loads(log_tail[start:])
    except json.JSONDecodeError:
        return []
    if isinstance(doc, dict) and isinstance(doc.get("ref"), str):
        return [doc["ref"]]
    if isinstance(doc, dict) and isinstance(doc.get("name"), str) and isinstance(doc.get("version"), int):
        return [f"{doc['name']}:{doc['version']}"]
    return []


@dataclass
class _Running:
    job: JobInfo
    spec: JobSpec
    proc: subprocess.Popen
    log: IO[bytes]
    log_path: Path
    gpus: list[int]
    cancel_sent: float | None = None


@dataclass
class Worker:
    """Run queued local jobs until stopped (or idle for `idle_exit_s`)."""

    capacity: Capacity = field(default_factory=Capacity.of_machine)
    poll_s: float = 0.2
    idle_exit_s: float | None = None
    grace_s: float = 10.0
    console: Console = field(default_factory=lambda: Console(stderr=True, markup=False, emoji=False))

    def __post_init__(self) -> None:
        self.queue = JobQueue()
        self.store = ArtifactStore()
        self.name = f"{HOST}:{os.getpid()}"
        self.running: dict[int, _Running] = {}
        self._stop = False

    def run(self) -> int:
        """Take the worker lock, recover orphans, then schedule until stopped; return an exit status."""
        # `worker_running()` holds the lock for a moment to probe it: wait such a probe out
        with worker_lock(wait_s=2.0) as got:
            if not got:
                self.console.print(f"another worker is running ({lock_path()}); this one exits")
                return 0
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: setattr(self, "_stop", True))
            self.recover()
            self.console.print(
                f"worker {self.name}: {self.capacity.cpus:g} cpus, {self.capacity.gpus} gpus, "
                f"{self.capacity.memory / 2**30:.1f} GiB"
            )
            idle_since = last_upload = time.monotonic()
            while not self._stop:
                self.reap()
                self.cancel_requested()
                self.schedule()
                now = time.monotonic()
                if not self.store.local and now - last_upload > 5.0:
                    self.upload_logs()
                    last_upload = now
                if self.running:
                    idle_since = now
                elif self.idle_exit_s is not None and now - idle_since > self.idle_exit_s:
                    break
                time.sleep(self.poll_s)
            self.shutdown()
        # submitted while this worker was exiting idle
        if not self._stop and self.queue.queued():
            start_worker(self.idle_exit_s or 60.0)
        return 0

    def recover(self) -> list[JobInfo]:
        """Kill what is left of jobs whose worker on this host died, upload their logs, and requeue them."""
        orphans = [j for j in self.queue.running(worker_host=HOST) if not worker_alive(j.worker)]
        for job in orphans:
            killed = kill_job_processes(job_key(self.queue.db_url, job.id))
            self._upload(job.id, job.attempts)
            self.queue.finish(
                job.id,
                job.attempts,
                "lost",
                error=f"worker {job.worker} died ({killed} processes left, killed)",
            )
            self.console.print(
                f"job {job.id}: its worker {job.worker} died; attempt {job.attempts} marked lost"
            )
        return orphans

    def _free(self) -> tuple[float, set[int], int]:
        cpus = self.capacity.cpus - sum(r.spec.resources.cpus for r in self.running.values())
        used = {g for r in self.running.values() for g in r.gpus}
        memory = self.capacity.memory - sum(r.spec.resources.memory_bytes for r in self.running.values())
        return cpus, set(range(self.capacity.gpus)) - used, memory

    def schedule(self) -> None:
        """Start every queued job that fits in what is free, in priority order (smaller jobs fill gaps)."""
        if self._stop:
            return
        for job in self.queue.queued():
            try:
                spec = job.job_spec
                self.capacity.check(spec)
                cpus, gpus, memory = self._free()
                r = spec.resources
                if (
                    r.cpus <= cpus + 1e-9
                    and r.gpus <= len(gpus)
                    and (not self.capacity.memory or r.memory_bytes <= memory)
                ):
                    self.start(job, spec, sorted(gpus)[: r.gpus])
            except Exception as e:
                # one bad job fails alone; the worker and the queue go on
                now = self.queue.get(job.id)
                mine = now.state == "running" and now.worker == self.name and job.id not in self.running
                claimed = now if mine else self.queue.claim(job.id, self.name)
                if claimed is not None:
                    self.queue.finish(job.id, claimed.attempts, "failed", error=one_line(e))
                self.console.print(f"job {job.id}: cannot run: {one_line(e)}")

    def start(self, job: JobInfo, spec: JobSpec, gpus: list[int]) -> None:
        """Claim `job` and start its next attempt as a subprocess in a new process group."""
        key = log_key(job.id, job.attempts + 1)
        claimed = self.queue.claim(job.id, self.name, logs_uri=self.store.location(key))
        if claimed is None:
            return
        n = claimed.attempts
        log_path = self._log_path(job.id, n)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **(spec.spec.resolved_env(os.environ) if isinstance(spec.spec, CommandSpec) else {}),
            "LEPTON_JOB_ID": str(job.id),
            "LEPTON_JOB_ATTEMPT": str(n),
            "LEPTON_JOB_KEY": job_key(self.queue.db_url, job.id),
            "OMP_NUM_THREADS": str(max(1, int(spec.resources.cpus))),
            "PYTHONUNBUFFERED": "1",
            "CUDA_VISIBLE_DEVICES": ",".join(self.gpu_ids[g] for g in gpus),
        }
        argv = spec.command(
            checkpoint_dir=str(config.home() / "checkpoints" / "jobs" / str(job.id)),
            resume=isinstance(spec.spec, TrainSpec) and n > 1,
        )
        if argv[0] == "lepton":
            argv = [sys.executable, "-m", "lepton_ai.cli.main", *argv[1:]]
        cwd = job.cwd if job.cwd and os.path.isdir(job.cwd) else None
        parent = os.getpid()
        # The child holds the log open after this function returns: it is closed when the job ends.
        log = open(log_path, "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(parent),
            )
        except (OSError, ValueError) as e:
            log.close()
            self.queue.finish(job.id, n, "failed", error=f"cannot start {argv[0]}: {one_line(e)}")
            return
        # Watched from now on, whatever happens next: were recording the start to fail and the attempt be
        # marked failed, a retry would run beside a process nobody watches.
        self.running[job.id] = _Running(claimed, spec, proc, log, log_path, gpus)
        try:
            self.queue.started(job.id, n, pgid=proc.pid)
        except Exception as e:
            # only its process group is unrecorded: this worker reaps it, cancels reach it through `running`
            self.console.print(
                f"job {job.id}: started, but its process group was not recorded: {one_line(e)}"
            )
        self.console.print(f"job {job.id} ({job.name}) attempt {n}: started, pid {proc.pid}")

    @property
    def gpu_ids(self) -> list[str]:
        """Return the device ids behind GPU slots 0..n-1 (through the worker's own CUDA_VISIBLE_DEVICES)."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return visible.split(",") if visible else [str(i) for i in range(self.capacity.gpus)]

    def _log_path(self, job_id: int, attempt: int) -> Path:
        key = log_key(job_id, attempt)
        return Path(self.store.path(key)) if self.store.local else config.home() / key

    def reap(self) -> None:
        """Record every attempt that ended, after killing anything it left running in its name."""
        for job_id, r in list(self.running.items()):
            code = r.proc.poll()
            if code is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # children it left behind hold no slot: end them
                os.killpg(r.proc.pid, signal.SIGKILL)
            kill_job_processes(job_key(self.queue.db_url, job_id))
            r.log.close()
            self._upload(job_id, r.job.attempts)
            with open(r.log_path, "rb") as f:
                f.seek(max(0, r.log_path.stat().st_size - 65536))
                tail = f.read().decode("utf-8", "replace")
            ok = code == 0
            error = None if ok else (f"killed by signal {-code}" if code < 0 else f"exit code {code}")
            info = self.queue.finish(
                job_id,
                r.job.attempts,
                "succeeded" if ok else "failed",
                exit_code=code,
                error=error,
                versions=produced_versions(tail) if ok else [],
            )
            del self.running[job_id]
            self.console.print(
                f"job {job_id} attempt {r.job.attempts}: {error or 'succeeded'} → {info.state}"
            )

    def upload_logs(self) -> None:
        """Copy the logs of running attempts to a remote artifact store (so `logs -f` elsewhere sees them)."""
        for job_id, r in self.running.items():
            self._upload(job_id, r.job.attempts)

    def _upload(self, job_id: int, attempt: int) -> None:
        if self.store.local:
            return
        path = self._log_path(job_id, attempt)
        try:
            if path.exists():
                self.store.fs.put(str(path), self.store.path(log_key(job_id, attempt)))
        except Exception as e:
            # a network glitch must not take the worker and its jobs down
            self.console.print(f"job {job_id}: log upload failed ({one_line(e)}); retrying later")

    def cancel_requested(self) -> None:
        """Terminate the process groups of jobs asked to cancel (SIGTERM, then SIGKILL after the grace
        time)."""
        if not self.running:
            return
        flagged = {j.id for j in self.queue.running(worker_host=HOST) if j.cancel_requested}
        for job_id in flagged & set(self.running):
            self._signal(self.running[job_id])

    def _signal(self, r: _Running) -> None:
        now = time.monotonic()
        if r.cancel_sent is None:
            r.cancel_sent = now
            sig = signal.SIGTERM
        elif now - r.cancel_sent > self.grace_s:
            sig = signal.SIGKILL
        else:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.proc.pid, sig)

    def shutdown(self) -> None:
        """Stop: record what already ended, end the rest (their jobs go back to the queue) and wait for
        them."""
        self.reap()
        for r in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for job_id, r in list(self.running.items()):
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait()
            kill_job_processes(job_key(self.queue.db_url, job_id))
            r.log.close()
            self._upload(job_id, r.job.attempts)
            self.queue.finish(
                job_id, r.job.attempts, "lost", exit_code=r.proc.returncode, error="the worker was stopped"
            )
        self.running.clear()


def read_log(job: JobInfo, attempt: int | None = None) -> str:
    """Return the log of one attempt (default: the latest) of a local job."""
    n = attempt or job.attempts
    if n < 1:
        return ""
    store = ArtifactStore()
    key = log_key(job.id, n)
    path = Path(store.path(key)) if store.local else config.home() / key
    if path.exists():
        return path.read_text(encoding="utf-8", errors="replace")
    return store.fs.cat_file(store.path(key)).decode("utf-8", "replace") if store.exists(key) else ""


def describe(job: JobInfo) -> dict[str, Any]:
    """Return the fields `lepton job status` shows for a job."""
    return {k: v for k, v in job.to_dict().items() if k not in ("spec", "pgid", "cancel_requested")}
