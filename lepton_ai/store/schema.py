"""Tables of the registry. Every change here needs a migration in `migrations/versions`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Return the current UTC time, naive, as stored in every timestamp column."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(t: datetime | None) -> str | None:
    """Return a stored timestamp as ISO 8601 UTC to the second ('2026-01-02T03:04:05Z'); None stays None."""
    return None if t is None else t.isoformat(timespec="seconds") + "Z"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    # A counter rather than max(version): a removed version's number is never reused.
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ModelVersion.version",
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    # key relative to the artifact store root
    uri: Mapped[str] = mapped_column(String(1024))
    format: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    # the data version it was trained on (NAME:VERSION of a dataset), when it came from one
    dataset: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")
    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])


class VersionReport(Base):
    """What was measured of a model version after it was registered (a privacy audit…), one row per
    measurement: the version's artifact is immutable, so these live beside it, and go with it."""

    __tablename__ = "version_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    # what was measured, e.g. privacy_audit
    kind: Mapped[str] = mapped_column(String(32))
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    logs_uri: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class RunMetric(Base):
    """One value of one metric at one step of a run (loss per epoch, accuracy per round…)."""

    __tablename__ = "run_metrics"
    __table_args__ = (Index("ix_run_metrics_run_key_step", "run_id", "key", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """A unit of scheduled work: its spec, where it runs (backend), and its state.

    States: queued → running → succeeded | failed | cancelled; a running job whose worker
    died goes back to queued for another attempt."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_priority", "state", "priority", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32), default="local")
    # Ray address, kube context…
    address: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # the engine's own id
    external_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # where the submitter was
    cwd: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # host:pid of the local worker
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # the running attempt's process group
    pgid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    logs_uri: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # NAME:VERSION refs the job registered
    versions: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    attempt_rows: Mapped[list[JobAttempt]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="JobAttempt.attempt",
    )


class JobAttempt(Base):
    """One run of a job: who ran it, when, how it ended, and where its log is."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt", name="uq_job_attempts_job_attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="running")
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    logs_uri: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    job: Mapped[Job] = relationship(back_populates="attempt_rows")


class ServiceRecord(Base):
    """A service that `lepton serve` or `lepton deploy` started: where it answers, what it serves, and
    when it last said it was alive (a served process beats every LEPTON_HEARTBEAT_S seconds)."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(primary_key=True)
    # serve or deploy
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(String(1024), index=True)
    # NAME:VERSION, a saved-model folder or path.py:Class, as given
    model_ref: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # the machine that started it
    host: Mapped[str] = mapped_column(String(256))
    # the serving process (serve only)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # ray:NAME or k8s:NAMESPACE/NAME (deploy only)
    deployment: Mapped[str | None] = mapped_column(String(512), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Dataset(Base):
    """A dataset: its name, the format its records have, and the schema its versions are checked against."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    format: Mapped[str] = mapped_column(String(16))
    schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="DatasetVersion.version"
    )


class DatasetVersion(Base):
    """An immutable version of a dataset: its manifest (one row per record) in the artifact store, and what it
    holds (counts, classes, splits, what was quarantined or removed)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    manifest_uri: Mapped[str] = mapped_column(String(1024))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # what this version stored that no earlier one had
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")
    objects: Mapped[list[DatasetObject]] = relationship(cascade="all, delete-orphan")


class DatasetObject(Base):
    """An object of the artifact store a dataset version needs besides its manifest (a pack of its records):
    what keeps it from being deleted as unused."""

    __tablename__ = "dataset_objects"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(1024), index=True)
