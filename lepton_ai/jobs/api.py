"""What `lepton job` does, whatever the backend: submit, status, logs, cancel. The local
backend is our queue and worker; Ray and Kubernetes are handed the job and asked about it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

from lepton_ai.errors import InvalidInputError, LeptonError, one_line
from lepton_ai.jobs.processes import job_key, kill_job_processes, start_worker, worker_alive
from lepton_ai.jobs.queue import JobInfo, JobQueue
from lepton_ai.jobs.spec import CommandSpec, JobSpec, TrainSpec
from lepton_ai.jobs.worker import Capacity, produced_versions, read_log

BACKENDS = ("local", "ray", "kubernetes")
log = logging.getLogger("lepton_ai.jobs")


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
        from lepton_ai.jobs.kubernetes import KubernetesBackend

        return KubernetesBackend(address, **options)
    raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


def submit(
    spec: JobSpec, backend: str = "local", address: str | None = None, *, start: bool = True, **options: Any
) -> JobInfo:
    """Queue `spec` locally (starting a worker if none runs) or hand it to Ray / Kubernetes; return the
    job."""
    if isinstance(spec.spec, TrainSpec) and spec.spec.nnodes > 1 and backend != "kubernetes":
        raise InvalidInputError(
            f"spec.nnodes: {spec.spec.nnodes} machines need --backend kubernetes (a PyTorchJob); "
            "on one machine use spec.nproc"
        )
    if isinstance(spec.spec, CommandSpec):
        spec.spec.check_backend(backend)
    queue = JobQueue()
    if backend == "local":
        # counting GPUs starts CUDA: only for a job that asks for GPUs
        Capacity.of_machine(gpus=None if spec.resources.gpus else 0).check(spec)
        job = queue.submit(spec)
        if start:
            start_worker()
        return job
    remote = engine(backend, address, **options)
    claimed = queue.claim(queue.submit(spec, backend, address).id, worker=backend)
    # just queued, nobody else knows it
    assert claimed is not None
    job = claimed
    try:
        external = remote.submit(job.id, spec)
    except Exception as e:
        queue.finish(job.id, job.attempts, "failed", error=f"{backend} refused the job: {one_line(e)}")
        raise InvalidInputError(f"{backend} refused the job: {one_line(e)}") from None
    queue.started(job.id, job.attempts, external_id=external)
    return queue.get(job.id)


def status(job_id: int) -> JobInfo:
    """Return job `job_id`, asking its engine first when it runs on Ray or Kubernetes (the stored record, with
    a warning, when the engine cannot answer)."""
    queue = JobQueue()
    job = queue.get(job_id)
    if job.backend == "local" or job.done or not job.external_id:
        return job
    try:
        remote = engine(job.backend, job.address)
        state, code = remote.state(job.external_id)
        versions = produced_versions(remote.logs(job.external_id)[-65536:]) if state == "succeeded" else []
    except Exception as e:
        log.warning(
            "job %d: %s did not answer (%s); showing the last known state", job_id, job.backend, one_line(e)
        )
        return job
    return queue.sync(job.id, state, code, versions=versions)


def logs(job_id: int, follow: bool = False, poll_s: float = 0.5) -> Iterator[str]:
    """Yield the job's log (latest attempt); with `follow`, keep yielding new output until the job ends."""
    seen, attempt = 0, None
    while True:
        job = status(job_id)
        if job.backend == "local":
            # a new attempt writes a new log
            if attempt != job.attempts:
                attempt, seen = job.attempts, 0
            text = read_log(job)
        elif job.external_id:
            try:
                text = engine(job.backend, job.address).logs(job.external_id)
            except LeptonError:
                raise
            except Exception as e:
                raise InvalidInputError(f"job {job_id}: {job.backend} gave no logs: {one_line(e)}") from None
        else:
            text = ""
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        if not follow or job.done:
            return
        time.sleep(poll_s)


def cancel(job_id: int, wait_s: float = 15.0) -> JobInfo:
    """Cancel a job: a queued one at once, a running one by its worker or engine; waits up to `wait_s`."""
    queue = JobQueue()
    # a remote job may have finished since we last asked
    job = status(job_id)
    if job.backend != "local" and not job.done:
        if job.external_id:
            try:
                engine(job.backend, job.address).cancel(job.external_id)
            except LeptonError:
                raise
            except Exception as e:
                raise InvalidInputError(
                    f"job {job_id}: {job.backend} did not stop it: {one_line(e)}"
                ) from None
        queue.request_cancel(job_id)
        return queue.sync(job_id, "cancelled")
    # refuses a finished job
    job = queue.request_cancel(job_id)
    # its worker died: nobody else will end it
    if job.state == "running" and not worker_alive(job.worker):
        kill_job_processes(job_key(queue.db_url, job.id))
        return queue.finish(job.id, job.attempts, "cancelled", error="cancelled (its worker had died)")
    deadline = time.monotonic() + wait_s
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.2)
        job = queue.get(job_id)
    return job
