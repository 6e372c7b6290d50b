"""The registry: models, their versions and the runs that made them, over one metadata
database and one artifact store. The same API whatever the backends are."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from lepton_ai import config
from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.store import db
from lepton_ai.store.artifacts import ArtifactStore, StoredArtifact
from lepton_ai.store.refs import Ref, Versioned, check_name, parse_ref
from lepton_ai.store.schema import Model, ModelVersion, Run, RunMetric, iso, utcnow
from lepton_ai.store.summaries import MetricSummary, metric_summaries
from lepton_ai.store.sweep import delete_unused, lock_objects

T = TypeVar("T")

RUN_STATES = ("running", "completed", "failed", "cancelled")
# Each version's model, and its parent with the parent's model, in two queries for a whole list: lazily, each
# version of a page costs one or two queries more.
_LINEAGE = (joinedload(ModelVersion.model), selectinload(ModelVersion.parent).joinedload(ModelVersion.model))


def check_json(value: Any, what: str) -> Any:
    """Return `value` if it is finite, JSON-serialisable data; raise naming `what` otherwise."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what} must be JSON data without NaN or infinity: {e}") from e


def check_metrics(metrics: Any) -> dict[str, Any]:
    """Return `metrics` if it is a JSON object of finite data; raise InvalidInputError otherwise."""
    metrics = check_json(metrics, "metrics")
    if not isinstance(metrics, dict):
        raise InvalidInputError("metrics must be a JSON object (a dict)")
    return metrics


def local_path(ref: str | Path) -> Path:
    """Return `ref` as a local path: itself when it exists, else the registry's verified copy."""
    path = Path(str(ref)).expanduser()
    return path if path.exists() else Registry().fetch(str(ref))


@dataclass(frozen=True)
class VersionInfo(Versioned):
    """One registered version of a model."""

    name: str
    version: int
    uri: str
    key: str
    format: str
    size_bytes: int
    sha256: str
    metrics: dict[str, Any]
    parent: str | None
    recipe: dict[str, Any] | None
    run_id: int | None
    created_at: str | None
    description: str = ""
    tags: list[str] = field(default_factory=list)
    # the dataset version it was trained on (NAME:VERSION), if it came from one
    dataset: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A model name with its description, tags and how many versions it has."""

    name: str
    description: str
    tags: list[str]
    latest_version: int | None
    num_versions: int
    created_at: str | None
    updated_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class RunInfo:
    """A run (training, optimisation…) with its parameters and metrics over steps."""

    id: int
    kind: str
    name: str
    params: dict[str, Any]
    status: str
    # the last value of each metric
    metrics: dict[str, float]
    # every (step, value) of each metric
    history: dict[str, list[tuple[int, float]]]
    logs_uri: str | None
    created_at: str | None
    ended_at: str | None
    # each metric's first and last step, min, max and last value
    summary: dict[str, MetricSummary] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        # asdict would copy each of thousands of points one by one; a point is an immutable tuple
        out = asdict(replace(self, history={}))
        out["history"] = {k: list(v) for k, v in self.history.items()}
        return out


class Registry(db.Database):
    """Models, versions and runs in a database, their files in an artifact store."""

    def __init__(self, db_url: str | None = None, artifacts_url: str | None = None) -> None:
        super().__init__(db.normalize_url(db_url or config.db_url()))
        self.artifacts = ArtifactStore(artifacts_url or config.artifacts_url())

    # -- models and versions ---------------------------------------------------------

    def register(
        self,
        name: str,
        path: str | Path,
        *,
        metrics: dict[str, Any] | None = None,
        format: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        parent: str | None = None,
        recipe: dict[str, Any] | None = None,
        run_id: int | None = None,
        dataset: str | None = None,
    ) -> VersionInfo:
        """Store the file or directory at `path` as the next version of `name` and return it."""
        check_name(name)
        metrics = check_metrics(metrics or {})
        recipe = check_json(recipe, "recipe") if recipe is not None else None
        if not Path(path).exists():
            raise NotFoundError(f"no such file or directory: {path}")
        if parent is not None:
            # fail before copying anything
            self.get(parent)
        if run_id is not None:
            self.get_run(run_id)
        # what an earlier register or rm left when it was killed
        self.sweep()
        with self.artifacts.staged(path, fmt=format) as staged:
            stored = staged.artifact

            def insert(s: Session) -> VersionInfo:
                # published under the object's lock: a concurrent `rm` or sweep sees our row or none of our
                # files; a register killed before its commit leaves an object its lock file names for a sweep
                lock_objects(s, [stored.key])
                self.artifacts.publish(staged)
                return self._insert_version(
                    s, name, stored, description, tags, parent, metrics, recipe, run_id, dataset
                )

            return self._tx(insert)

    def _insert_version(
        self,
        s: Session,
        name: str,
        stored: StoredArtifact,
        description: str | None,
        tags: list[str] | None,
        parent: str | None,
        metrics: dict[str, Any],
        recipe: dict[str, Any] | None,
        run_id: int | None,
        dataset: str | None,
    ) -> VersionInfo:
        """Add the row of the next version of `name`, making the model when it is new; return it."""
        model = s.scalars(select(Model).where(Model.name == name).with_for_update()).first()
        if model is None:
            model = Model(name=name, description=description or "", tags=list(tags or []))
            s.add(model)
            # a concurrent creator makes this raise; transact() retries
            s.flush()
        else:
            if description is not None:
                model.description = description
            if tags:
                model.tags = sorted(set(model.tags) | set(tags))
        parent_row = self._version_row(s, parse_ref(parent)) if parent else None
        model.last_version += 1
        row = ModelVersion(
            model=model,
            version=model.last_version,
            uri=stored.key,
            format=stored.format,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            metrics=metrics,
            parent=parent_row,
            recipe=recipe,
            run_id=run_id,
            dataset=dataset,
        )
        s.add(row)
        s.flush()
        return self._info(row)

    def sweep(self) -> int:
        """Clear what killed registers left in the store's `tmp/`, deleting the objects they published but
        never recorded; return how many writers' leftovers went."""
        return self.artifacts.sweep_tmp(
            lambda keys: self._tx(lambda s: delete_unused(s, self.artifacts, keys))
        )

    def get(self, ref: str) -> VersionInfo:
        """Return the version `ref` names (`NAME` for the latest, or `NAME:VERSION`)."""
        parsed = parse_ref(ref)
        return self._read(lambda s: self._info(self._version_row(s, parsed)))

    def update_metrics(self, ref: str, metrics: dict[str, Any]) -> VersionInfo:
        """Merge `metrics` into the metrics of the version `ref` names (new values win); return it."""
        metrics = check_metrics(metrics)
        parsed = parse_ref(ref)

        def update(s: Session) -> VersionInfo:
            row = self._version_row(s, parsed)
            # read again under a row lock: a concurrent merge is not lost (SQLite's writes are serial anyway)
            s.refresh(row, with_for_update=True)
            # a new dict: the JSON column does not see changes made inside the old one
            row.metrics = {**(row.metrics or {}), **metrics}
            s.flush()
            return self._info(row)

        return self._tx(update)

    def verify(self, ref: str) -> VersionInfo:
        """Re-hash the store's copy of `ref`'s artifact against its recorded sha256 (not a cached copy)."""
        info = self.get(ref)
        self.artifacts.verify(info.key, info.sha256)
        return info

    def fetch(self, ref: str) -> Path:
        """Return a local path to the artifact of `ref`, its sha256 verified."""
        info = self.get(ref)
        return self.artifacts.fetch(info.key, info.sha256)

    def list_models(
        self, after: str | None = None, limit: int | None = None, contains: str | None = None
    ) -> list[ModelInfo]:
        """Return every model by name, or `limit` of them named after `after`, whose name has `contains`."""

        def query(s: Session) -> list[ModelInfo]:
            counts = (
                select(
                    ModelVersion.model_id,
                    func.count().label("n"),
                    func.max(ModelVersion.version).label("latest"),
                )
                .group_by(ModelVersion.model_id)
                .subquery()
            )
            q = select(Model, counts.c.n, counts.c.latest).outerjoin(counts, counts.c.model_id == Model.id)
            if after is not None:
                q = q.where(Model.name > after)
            if contains:
                q = q.where(Model.name.contains(contains, autoescape=True))
            rows = s.execute(q.order_by(Model.name).limit(limit))
            return [
                ModelInfo(
                    m.name, m.description, list(m.tags), latest, n or 0, iso(m.created_at), iso(m.updated_at)
                )
                for m, n, latest in rows
            ]

        return self._read(query)

    def list_versions(
        self, name: str, before: int | None = None, limit: int | None = None
    ) -> list[VersionInfo]:
        """Return every version of model `name`, oldest first; with `limit`, that many, newest first, numbered
        below `before`."""
        check_name(name)

        def query(s: Session) -> list[VersionInfo]:
            model = self._model_row(s, name)
            q = select(ModelVersion).where(ModelVersion.model_id == model.id).options(*_LINEAGE)
            if limit is None and before is None:
                return [self._info(v) for v in s.scalars(q.order_by(ModelVersion.version))]
            if before is not None:
                q = q.where(ModelVersion.version < before)
            return [self._info(v) for v in s.scalars(q.order_by(ModelVersion.version.desc()).limit(limit))]

        return self._read(query)

    def children(self, ref: str) -> list[VersionInfo]:
        """Return the versions made from `ref` (optimised, pruned, adapted…), oldest first."""

        def query(s: Session) -> list[VersionInfo]:
            parent = self._version_row(s, parse_ref(ref))
            return self._versions_where(s, ModelVersion.parent_id == parent.id)

        return self._read(query)

    def trained_on(self, dataset: str) -> list[VersionInfo]:
        """Return the versions trained on dataset version `dataset` (NAME:VERSION), oldest first."""
        return self._read(lambda s: self._versions_where(s, ModelVersion.dataset == dataset))

    def _versions_where(self, s: Session, condition: Any) -> list[VersionInfo]:
        q = select(ModelVersion).where(condition).order_by(ModelVersion.id).options(*_LINEAGE)
        return [self._info(v) for v in s.scalars(q)]

    def remove(self, ref: str) -> list[VersionInfo]:
        """Delete the version `ref` names, or with a bare NAME the whole model; return what went."""
        parsed = parse_ref(ref)

        def delete(s: Session) -> list[VersionInfo]:
            if parsed.version is None:
                model = self._model_row(s, parsed.name)
                gone = [self._info(v) for v in model.versions]
                s.delete(model)
            else:
                row = self._version_row(s, parsed)
                gone = [self._info(row)]
                s.delete(row)
            return gone

        gone = self._tx(delete)
        self.sweep()
        # content is shared: delete only what nobody uses, under the locks `register` takes
        self._tx(lambda s: delete_unused(s, self.artifacts, [v.key for v in gone]))
        return gone

    def _model_row(self, s: Session, name: str) -> Model:
        model = s.scalars(select(Model).where(Model.name == name)).first()
        if model is None:
            raise NotFoundError(f"unknown model {name!r}: `lepton models list` shows the registered ones")
        return model

    def _version_row(self, s: Session, ref: Ref) -> ModelVersion:
        model = self._model_row(s, ref.name)
        q = select(ModelVersion).where(ModelVersion.model_id == model.id)
        q = (
            q.order_by(ModelVersion.version.desc())
            if ref.version is None
            else q.where(ModelVersion.version == ref.version)
        )
        row = s.scalars(q.limit(1)).first()
        if row is None:
            raise NotFoundError(
                f"model {ref.name!r} has no version {ref.version}"
                if ref.version
                else f"model {ref.name!r} has no versions"
            )
        return row

    def _info(self, v: ModelVersion) -> VersionInfo:
        parent = f"{v.parent.model.name}:{v.parent.version}" if v.parent is not None else None
        return VersionInfo(
            name=v.model.name,
            version=v.version,
            uri=self.artifacts.location(v.uri),
            key=v.uri,
            format=v.format,
            size_bytes=v.size_bytes,
            sha256=v.sha256,
            metrics=dict(v.metrics or {}),
            parent=parent,
            recipe=v.recipe,
            run_id=v.run_id,
            created_at=iso(v.created_at),
            description=v.model.description,
            tags=list(v.model.tags or []),
            dataset=v.dataset,
        )

    # -- runs ----------------------------------------------------------------------------

    def start_run(self, kind: str, params: dict[str, Any] | None = None, name: str = "") -> RunInfo:
        """Record a new running run of `kind` (train, optimize…) and return it."""
        params = check_json(params or {}, "run params")

        def insert(s: Session) -> int:
            run = Run(kind=kind, name=name, params=params, status="running")
            s.add(run)
            s.flush()
            return run.id

        return self.get_run(self._tx(insert))

    def log_metrics(self, run_id: int, metrics: dict[str, float], step: int = 0) -> None:
        """Append one value per metric at `step` to run `run_id`."""
        bad = [k for k, v in metrics.items() if not isinstance(v, (int, float)) or not math.isfinite(v)]
        if bad:
            raise InvalidInputError(f"metrics must be finite numbers; not so for: {', '.join(bad)}")

        def insert(s: Session) -> None:
            self._run_row(s, run_id)
            s.add_all(RunMetric(run_id=run_id, key=k, step=step, value=float(v)) for k, v in metrics.items())

        self._tx(insert)

    def end_run(self, run_id: int, status: str = "completed", logs_uri: str | None = None) -> RunInfo:
        """Mark run `run_id` as ended with `status` and return it."""
        if status not in RUN_STATES[1:]:
            raise InvalidInputError(f"a run ends as one of {', '.join(RUN_STATES[1:])}, not {status!r}")

        def update(s: Session) -> None:
            run = self._run_row(s, run_id)
            run.status, run.ended_at = status, utcnow()
            if logs_uri is not None:
                run.logs_uri = logs_uri

        self._tx(update)
        return self.get_run(run_id)

    def get_run(self, run_id: int) -> RunInfo:
        """Return run `run_id` with its metrics."""
        return self._read(lambda s: self._run_info(s, self._run_row(s, run_id)))

    def list_runs(
        self,
        kind: str | None = None,
        limit: int = 50,
        before: int | None = None,
        status: str | None = None,
        history: bool = True,
    ) -> list[RunInfo]:
        """Return the newest runs first (numbered below `before`), optionally only those of `kind` or in
        `status`; `history=False` leaves each metric's series out (its summary stays)."""

        def query(s: Session) -> list[RunInfo]:
            q = select(Run).order_by(Run.id.desc()).limit(limit)
            if kind:
                q = q.where(Run.kind == kind)
            if status:
                q = q.where(Run.status == status)
            if before is not None:
                q = q.where(Run.id < before)
            runs = list(s.scalars(q))
            if history:
                return [self._run_info(s, r) for r in runs]
            summaries = metric_summaries(s, [r.id for r in runs])
            return [self._run_info(s, r, summaries.get(r.id, {})) for r in runs]

        return self._read(query)

    def _run_row(self, s: Session, run_id: int) -> Run:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"unknown run {run_id}: `lepton runs list` shows the recorded ones")
        return run

    def _run_info(self, s: Session, run: Run, summary: dict[str, MetricSummary] | None = None) -> RunInfo:
        history: dict[str, list[tuple[int, float]]] = {}
        if summary is None:
            # plain rows, not ORM objects: a run has thousands of points, and a comparison tens of runs
            q = (
                select(RunMetric.key, RunMetric.step, RunMetric.value)
                .where(RunMetric.run_id == run.id)
                .order_by(RunMetric.step, RunMetric.id)
            )
            for key, step, value in s.execute(q):
                history.setdefault(key, []).append((step, value))
            summary = {k: MetricSummary.of(v) for k, v in history.items()}
        return RunInfo(
            id=run.id,
            kind=run.kind,
            name=run.name,
            params=dict(run.params or {}),
            status=run.status,
            metrics={k: v.last for k, v in summary.items()},
            history=history,
            summary=summary,
            logs_uri=run.logs_uri,
            created_at=iso(run.created_at),
            ended_at=iso(run.ended_at),
        )
