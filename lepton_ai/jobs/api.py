"""What `lepton job` does, whatever the backend: submit, status, logs, cancel. The local
backend is our queue and worker; Ray and Kubernetes are handed the job and asked about it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from lepton_ai.errors import InvalidInputError
from lepton_ai.jobs.queue import JobInfo, JobQueue
from lepton_ai.jobs.spec import JobSpec
from lepton_ai.jobs.worker import Capacity, job_key, kill_job_processes, produced_versions, read_log, start_worker, \
    worker_running

BACKENDS = ("local", "ray", "kubernetes")


class Engine(Protocol):
    """An engine other people run (Ray, Kubernetes) that takes our jobs."""

    def submit(self, job_id: int, spec: JobSpec) -> str: ...
    def state(self, external_id: str) -> tuple[str, int | None]: ...
    def logs(self, external_id: str) -> str: ...
    def cancel(self, external_id: str) -> None: ...


def engine(backend: str, address: str | None = None, **options: Any) -> Engine:
    """Return the client of a remote backend (raises a one-line error when it cannot be reached)."""
    if backend == "ray":
        from lepton_ai.jobs.ray import RayBackend

        return RayBackend(address)
    if backend == "kubernetes":
        from lepton_ai.deploy.kubernetes import KubernetesBackend

        return KubernetesBackend(address, **options)
    raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


def submit(spec: JobSpec, backend: str = "local", address: str | None = None, *, start: bool = True,
           **options: Any) -> JobInfo:
    """Queue `spec` locally (starting a worker if none runs) or hand it to Ray / Kubernetes; return the job."""
    queue = JobQueue()
    if backend == "local":
        Capacity.of_machine(gpus=None if spec.resources.gpus else 0).check(spec)  # no CUDA probe unless asked
        job = queue.submit(spec)
        if start:
            start_worker()
        return job
    remote = engine(backend, address, **options)
    job = queue.submit(spec, backend, address)
    queue.claim(job.id, worker=backend)
    try:
        external = remote.submit(job.id, spec)
    except Exception as e:
        queue.finish(job.id, "failed", error=f"{backend} refused the job: {str(e).strip().splitlines()[0][:300]}")
        raise InvalidInputError(f"{backend} refused the job: {str(e).strip().splitlines()[0][:300]}") from None
    queue.started(job.id, external_id=external)
    return queue.get(job.id)


def status(job_id: int) -> JobInfo:
    """Return job `job_id`, asking its engine first when it runs on Ray or Kubernetes."""
    queue = JobQueue()
    job = queue.get(job_id)
    if job.backend == "local" or job.done or not job.external_id:
        return job
    remote = engine(job.backend, job.address)
    state, code = remote.state(job.external_id)
    versions = produced_versions(remote.logs(job.external_id)[-65536:]) if state == "succeeded" else []
    return queue.sync(job.id, state, code, versions=versions)


def logs(job_id: int, follow: bool = False, poll_s: float = 0.5) -> Iterator[str]:
    """Yield the job's log (latest attempt); with `follow`, keep yielding new output until the job ends."""
    seen, attempt = 0, None
    while True:
        job = status(job_id)
        if job.backend == "local":
            if attempt != job.attempts:  # a new attempt writes a new log
                attempt, seen = job.attempts, 0
            text = read_log(job)
        else:
            text = engine(job.backend, job.address).logs(job.external_id) if job.external_id else ""
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        if not follow or job.done:
            return
        time.sleep(poll_s)


def cancel(job_id: int, wait_s: float = 15.0) -> JobInfo:
    """Cancel a job: a queued one at once, a running one by its worker or engine; waits up to `wait_s`."""
    queue = JobQueue()
    job = queue.request_cancel(job_id)  # refuses a finished job
    if job.backend != "local":
        if job.external_id:
            engine(job.backend, job.address).cancel(job.external_id)
        return queue.sync(job.id, "cancelled")
    if job.state == "running" and not worker_running():  # its worker died: nobody else will end it
        kill_job_processes(job_key(queue.db_url, job.id))
        return queue.finish(job.id, "cancelled", error="cancelled (its worker had died)")
    deadline = time.monotonic() + wait_s
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.2)
        job = queue.get(job_id)
    return job
