"""The job table: submit, claim, finish, cancel and recover jobs, each step one transaction,
so a job is never lost and never claimed twice, whatever process dies when."""

from __future__ import annotations

import builtins
import os
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs.spec import JobSpec, parse
from lepton_ai.store import db
from lepton_ai.store.schema import Job, JobAttempt, iso, utcnow

T = TypeVar("T")

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
# a job whose worker died this many times is failed, not retried forever
MAX_LOST = 5


@dataclass(frozen=True)
class AttemptInfo:
    """One run of a job."""

    attempt: int
    # running, succeeded, failed, cancelled, or lost (its worker died)
    state: str
    worker: str | None
    exit_code: int | None
    error: str | None
    logs_uri: str | None
    started_at: str | None
    ended_at: str | None


# what a listing shows in place of an environment value
REDACTED = "<redacted>"


@dataclass(frozen=True)
class JobInfo:
    """A job as stored: spec, backend, state and what it produced."""

    id: int
    name: str
    kind: str
    backend: str
    state: str
    attempts: int
    exit_code: int | None
    error: str | None
    logs_uri: str | None
    versions: list[str]
    address: str | None
    external_id: str | None
    worker: str | None
    pgid: int | None
    cancel_requested: bool
    priority: int
    cwd: str | None
    spec: dict[str, Any]
    created_at: str | None
    started_at: str | None
    ended_at: str | None

    @property
    def done(self) -> bool:
        """Return whether the job reached a final state."""
        return self.state in TERMINAL

    @property
    def job_spec(self) -> JobSpec:
        """Return the validated spec."""
        return parse(self.spec)

    def shown_spec(self) -> dict[str, Any]:
        """Return the spec as it may be shown: each environment value replaced by REDACTED (it may be a
        secret; the worker reads the stored spec, never this), references kept."""
        inner = self.spec.get("spec")
        if not isinstance(inner, dict) or not inner.get("env"):
            return self.spec
        # a reference ({"from_env": …}, {"secret": …}) names where the value is, and may be shown
        env = {k: REDACTED if isinstance(v, str) else v for k, v in inner["env"].items()}
        return {**self.spec, "spec": {**inner, "env": env}}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (what `lepton job status --json` prints), environment values redacted."""
        return {**asdict(self), "spec": self.shown_spec()}


def _info(job: Job) -> JobInfo:
    return JobInfo(
        id=job.id,
        name=job.name,
        kind=job.kind,
        backend=job.backend,
        state=job.state,
        attempts=job.attempts,
        exit_code=job.exit_code,
        error=job.error,
        logs_uri=job.logs_uri,
        versions=list(job.versions or []),
        address=job.address,
        external_id=job.external_id,
        worker=job.worker,
        pgid=job.pgid,
        cancel_requested=job.cancel_requested,
        priority=job.priority,
        cwd=job.cwd,
        spec=job.spec,
        created_at=iso(job.created_at),
        started_at=iso(job.started_at),
        ended_at=iso(job.ended_at),
    )


class JobQueue(db.Database):
    """Jobs in the registry database (SQLite by default, PostgreSQL by URL)."""

    @staticmethod
    def _row(s: Session, job_id: int) -> Job:
        # a row lock on PostgreSQL; SQLite locks the whole file
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            raise NotFoundError(f"no job {job_id}: `lepton job list` shows the jobs")
        return job

    def submit(
        self, spec: JobSpec, backend: str = "local", address: str | None = None, cwd: str | None = None
    ) -> JobInfo:
        """Record a new queued job (run in `cwd`, default the current directory) and return it."""

        def insert(s: Session) -> JobInfo:
            job = Job(
                name=spec.name,
                kind=spec.kind,
                backend=backend,
                address=address,
                spec=spec.to_dict(),
                cwd=cwd or os.getcwd(),
                priority=spec.priority,
                state="queued",
                attempts=0,
                cancel_requested=False,
                versions=[],
            )
            s.add(job)
            s.flush()
            return _info(job)

        return self._tx(insert)

    def get(self, job_id: int) -> JobInfo:
        """Return job `job_id`."""
        return self._read(lambda s: _info(self._row(s, job_id)))

    def list(
        self, state: str | None = None, backend: str | None = None, limit: int = 50, before: int | None = None
    ) -> builtins.list[JobInfo]:
        """Return jobs, newest first (numbered below `before`), optionally only those in `state` or on
        `backend`."""
        if state is not None and state not in STATES:
            raise InvalidInputError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if before is not None:
            q = q.where(Job.id < before)
        if state:
            q = q.where(Job.state == state)
        if backend:
            q = q.where(Job.backend == backend)
        return self._read(lambda s: [_info(j) for j in s.scalars(q)])

    def attempts(self, job_id: int) -> builtins.list[AttemptInfo]:
        """Return every attempt of a job, oldest first."""

        def query(s: Session) -> builtins.list[AttemptInfo]:
            return [
                AttemptInfo(
                    a.attempt,
                    a.state,
                    a.worker,
                    a.exit_code,
                    a.error,
                    a.logs_uri,
                    iso(a.started_at),
                    iso(a.ended_at),
                )
                for a in self._row(s, job_id).attempt_rows
            ]

        return self._read(query)

    def queued(self, backend: str = "local") -> builtins.list[JobInfo]:
        """Return queued jobs in the order they should start: priority, then age."""
        q = (
            select(Job)
            .where(Job.state == "queued", Job.backend == backend)
            .order_by(Job.priority.desc(), Job.id)
        )
        return self._read(lambda s: [_info(j) for j in s.scalars(q)])

    def running(self, worker_host: str | None = None, backend: str = "local") -> builtins.list[JobInfo]:
        """Return running jobs on `backend` (on one host's worker when `worker_host` is given)."""
        q = select(Job).where(Job.state == "running", Job.backend == backend)
        if worker_host is not None:
            q = q.where(Job.worker.like(f"{worker_host}:%"))
        return self._read(lambda s: [_info(j) for j in s.scalars(q)])

    def claim(self, job_id: int, worker: str, logs_uri: str | None = None) -> JobInfo | None:
        """Move a queued job to running for `worker` and open its next attempt; None if it is no longer
        queued."""

        def update(s: Session) -> JobInfo | None:
            job = self._row(s, job_id)
            if job.state != "queued" or job.cancel_requested:
                return None
            now = utcnow()
            job.state, job.worker, job.attempts, job.pgid = "running", worker, job.attempts + 1, None
            job.started_at, job.logs_uri, job.exit_code, job.error = now, logs_uri, None, None
            s.add(
                JobAttempt(
                    job_id=job.id,
                    attempt=job.attempts,
                    state="running",
                    worker=worker,
                    logs_uri=logs_uri,
                    started_at=now,
                )
            )
            s.flush()
            return _info(job)

        return self._tx(update)

    def started(
        self, job_id: int, attempt: int, pgid: int | None = None, external_id: str | None = None
    ) -> None:
        """Record the process group (local) or the engine's id (Ray, Kubernetes) of attempt `attempt`."""

        def update(s: Session) -> None:
            job = self._row(s, job_id)
            if job.state == "running" and job.attempts == attempt:
                job.pgid = pgid if pgid is not None else job.pgid
                job.external_id = external_id if external_id is not None else job.external_id

        self._tx(update)

    def finish(
        self,
        job_id: int,
        attempt: int,
        state: str,
        exit_code: int | None = None,
        error: str | None = None,
        versions: builtins.list[str] | None = None,
    ) -> JobInfo:
        """End attempt `attempt` as succeeded, failed, cancelled or lost and requeue when retries are left;
        a no-op when that attempt is no longer the running one (a late report from a worker presumed dead)."""
        if state not in ("succeeded", "failed", "cancelled", "lost"):
            raise ValueError(f"cannot finish a job as {state!r}")

        def update(s: Session) -> JobInfo:
            job = self._row(s, job_id)
            if job.state != "running" or job.attempts != attempt:
                return _info(job)
            now = utcnow()
            row = job.attempt_rows[-1]
            row.state, row.exit_code, row.error, row.ended_at = state, exit_code, error, now
            lost = sum(a.state == "lost" for a in job.attempt_rows)
            failed = sum(a.state == "failed" for a in job.attempt_rows)
            new, why = state, error
            if job.cancel_requested:
                new = "cancelled"
            elif state == "lost":
                new = "queued" if lost < MAX_LOST else "failed"
                why = error if lost < MAX_LOST else f"its worker died during {lost} attempts"
            elif state == "failed" and failed <= int(job.spec.get("retries", 0)):
                new = "queued"
            job.state, job.exit_code, job.error, job.pgid = new, exit_code, why, None
            job.versions = list(job.versions or []) + list(versions or [])
            job.ended_at = now if new in TERMINAL else None
            return _info(job)

        return self._tx(update)

    def sync(
        self,
        job_id: int,
        state: str,
        exit_code: int | None = None,
        versions: builtins.list[str] | None = None,
    ) -> JobInfo:
        """Record the state an external engine reports (Ray, Kubernetes); finished jobs stay finished."""
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")

        def update(s: Session) -> JobInfo:
            job = self._row(s, job_id)
            if job.state in TERMINAL or state == job.state:
                return _info(job)
            now = utcnow()
            job.state = state
            if state == "running" and job.started_at is None:
                job.started_at = now
            if state in TERMINAL:
                job.ended_at, job.exit_code, job.versions = now, exit_code, list(versions or [])
                for a in job.attempt_rows:
                    if a.state == "running":
                        a.state, a.exit_code, a.ended_at = state, exit_code, now
            return _info(job)

        return self._tx(update)

    def request_cancel(self, job_id: int) -> JobInfo:
        """Cancel a queued job at once, or flag a running one for its worker; refuse a finished one."""

        def update(s: Session) -> JobInfo:
            job = self._row(s, job_id)
            if job.state in TERMINAL:
                raise InvalidInputError(f"job {job_id} already {job.state}: nothing to cancel")
            job.cancel_requested = True
            if job.state == "queued":
                job.state, job.ended_at = "cancelled", utcnow()
            return _info(job)

        return self._tx(update)
