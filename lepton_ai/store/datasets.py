"""The datasets in the registry: each version a manifest in the artifact store (one row per record, naming
the content-addressed pack that holds it) and what it holds, registered in one transaction once every object
it needs is stored."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from lepton_ai import config
from lepton_ai.errors import InvalidInputError, LeptonError, NotFoundError
from lepton_ai.store import db
from lepton_ai.store.artifacts import ArtifactStore
from lepton_ai.store.refs import Ref, Versioned, check_name, parse_ref
from lepton_ai.store.registry import check_json
from lepton_ai.store.schema import Dataset, DatasetObject, DatasetVersion, iso
from lepton_ai.store.sweep import lock_objects


@dataclass(frozen=True)
class DatasetVersionInfo(Versioned):
    """One version of a dataset: where its manifest is, how many records it holds, and what it holds."""

    name: str
    version: int
    format: str
    manifest_key: str
    manifest_sha256: str
    records: int
    size_bytes: int
    stored_bytes: int
    stats: dict[str, Any]
    schema: dict[str, Any]
    source: str
    created_at: str | None


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: its format, latest version and how many versions it has."""

    name: str
    format: str
    latest_version: int | None
    num_versions: int
    records: int
    created_at: str | None
    updated_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class NewVersion:
    """What `Datasets.register` records: the manifest file, and the counts and schema of the version."""

    manifest: Path
    format: str
    records: int
    size_bytes: int
    stored_bytes: int
    stats: dict[str, Any]
    schema: dict[str, Any]
    source: str
    # the packs its records are in
    objects: list[str] = field(default_factory=list)


class Datasets(db.Database):
    """Datasets and their versions in the registry's database; manifests and packs in its artifact store."""

    def __init__(self, db_url: str | None = None, artifacts_url: str | None = None) -> None:
        super().__init__(db.normalize_url(db_url or config.db_url()))
        self.artifacts = ArtifactStore(artifacts_url or config.artifacts_url())

    def register(self, name: str, new: NewVersion) -> DatasetVersionInfo:
        """Store the manifest and record it as the next version of dataset `name`, in one transaction; the
        first version sets the dataset's format and schema."""
        check_name(name, "dataset")
        stats, schema = check_json(new.stats, "stats"), check_json(new.schema, "schema")
        stored = self.artifacts.put(new.manifest, fmt="parquet")
        needed = [stored.key, *new.objects]

        def insert(s: Session) -> DatasetVersionInfo:
            # under the objects' locks a concurrent rm or sweep saw this version's rows, or deleted first
            lock_objects(s, needed)
            missing = [key for key in needed if not self.artifacts.has(key)]
            if missing:
                raise LeptonError(
                    f"{missing[0]} went missing during the add (a concurrent cleanup): add again"
                )
            dataset = s.scalars(select(Dataset).where(Dataset.name == name).with_for_update()).first()
            if dataset is None:
                dataset = Dataset(name=name, format=new.format, schema=schema)
                s.add(dataset)
                # a concurrent creator makes this raise; _tx retries
                s.flush()
            elif dataset.format != new.format:
                raise InvalidInputError(
                    f"dataset {name!r} holds {dataset.format} records, not {new.format}: add to another name"
                )
            dataset.last_version += 1
            row = DatasetVersion(
                dataset=dataset,
                version=dataset.last_version,
                manifest_uri=stored.key,
                manifest_sha256=stored.sha256,
                records=new.records,
                size_bytes=new.size_bytes,
                stored_bytes=new.stored_bytes + stored.size_bytes,
                stats=stats,
                source=new.source,
                objects=[DatasetObject(key=key) for key in sorted(set(new.objects))],
            )
            s.add(row)
            s.flush()
            return _info(row)

        return self._tx(insert)

    def update_stats(self, ref: str, stats: dict[str, Any]) -> DatasetVersionInfo:
        """Merge `stats` into what version `ref` records of itself (its records never change); return it."""
        stats = check_json(stats, "stats")
        parsed = parse_ref(ref, "dataset")

        def update(s: Session) -> DatasetVersionInfo:
            row = self._version_row(s, parsed)
            s.refresh(row, with_for_update=True)
            # a new dict: the JSON column does not see changes made inside the old one
            row.stats = {**(row.stats or {}), **stats}
            s.flush()
            return _info(row)

        return self._tx(update)

    def get(self, ref: str) -> DatasetVersionInfo:
        """Return the version `ref` names (`NAME` for the latest, or `NAME:VERSION`)."""
        parsed = parse_ref(ref, "dataset")
        return self._read(lambda s: _info(self._version_row(s, parsed)))

    def find(self, name: str) -> DatasetInfo | None:
        """Return dataset `name`, or None if there is none by that name."""
        return next((d for d in self.list_datasets() if d.name == name), None)

    def schema(self, name: str) -> dict[str, Any] | None:
        """Return the schema that dataset `name`'s versions are checked against, None before its first."""

        def query(s: Session) -> dict[str, Any] | None:
            row = s.scalars(select(Dataset).where(Dataset.name == name)).first()
            return None if row is None else dict(row.schema)

        return self._read(query)

    def manifest(self, info: DatasetVersionInfo) -> Path:
        """Return a local copy of the version's manifest, its sha256 checked."""
        return self.artifacts.fetch(info.manifest_key, info.manifest_sha256)

    def list_datasets(self) -> list[DatasetInfo]:
        """Return every dataset, by name."""

        def query(s: Session) -> list[DatasetInfo]:
            latest = (
                select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("v"), func.count())
                .group_by(DatasetVersion.dataset_id)
                .subquery()
            )
            rows = s.execute(
                select(Dataset, latest.c.v, latest.c[2], DatasetVersion.records)
                .outerjoin(latest, latest.c.dataset_id == Dataset.id)
                .outerjoin(
                    DatasetVersion,
                    (DatasetVersion.dataset_id == Dataset.id) & (DatasetVersion.version == latest.c.v),
                )
                .order_by(Dataset.name)
            ).all()
            return [
                DatasetInfo(d.name, d.format, v, n or 0, records or 0, iso(d.created_at), iso(d.updated_at))
                for d, v, n, records in rows
            ]

        return self._read(query)

    def list_versions(self, name: str) -> list[DatasetVersionInfo]:
        """Return every version of dataset `name`, oldest first."""

        def query(s: Session) -> list[DatasetVersionInfo]:
            dataset = self._dataset_row(s, name)
            return [_info(v) for v in dataset.versions]

        return self._read(query)

    def _dataset_row(self, s: Session, name: str) -> Dataset:
        row = s.scalars(select(Dataset).where(Dataset.name == name)).first()
        if row is None:
            raise NotFoundError(f"no dataset {name!r}: add one with `lepton data add {name} SOURCE`")
        return row

    def _version_row(self, s: Session, ref: Ref) -> DatasetVersion:
        dataset = self._dataset_row(s, ref.name)
        q = select(DatasetVersion).options(joinedload(DatasetVersion.dataset))
        q = q.where(DatasetVersion.dataset_id == dataset.id)
        q = (
            q.order_by(DatasetVersion.version.desc())
            if ref.version is None
            else q.where(DatasetVersion.version == ref.version)
        )
        row = s.scalars(q.limit(1)).first()
        if row is None:
            raise NotFoundError(f"dataset {ref.name!r} has no version {ref.version or ''}".rstrip())
        return row


def _info(v: DatasetVersion) -> DatasetVersionInfo:
    return DatasetVersionInfo(
        name=v.dataset.name,
        version=v.version,
        format=v.dataset.format,
        manifest_key=v.manifest_uri,
        manifest_sha256=v.manifest_sha256,
        records=v.records,
        size_bytes=v.size_bytes,
        stored_bytes=v.stored_bytes,
        stats=dict(v.stats or {}),
        schema=dict(v.dataset.schema or {}),
        source=v.source,
        created_at=iso(v.created_at),
    )
