"""Reports added to a model version after it was registered (a privacy audit…): one row each, written in one
transaction, kept beside the version's immutable artifact and removed with the version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.store import db
from lepton_ai.store.registry import Registry, check_json
from lepton_ai.store.schema import Model, ModelVersion, VersionReport, iso, utcnow

KINDS = ("privacy_audit",)


@dataclass(frozen=True)
class StoredReport:
    """A report as stored: the version it is about, what kind it is, its content and when it was added."""

    ref: str
    kind: str
    report: dict[str, Any]
    created_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the report's content with when it was added (what `models show --json` prints)."""
        return {**self.report, "recorded_at": self.created_at}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInputError(f"a version report's kind is one of {', '.join(KINDS)}, not {kind!r}")
    return kind


class VersionReports(db.Database):
    """The reports of model versions, in the registry's database."""

    def __init__(self, db_url: str | None = None) -> None:
        super().__init__(db_url)
        self.registry = Registry(self.db_url)

    def add(self, ref: str, kind: str, report: dict[str, Any]) -> StoredReport:
        """Store `report` (JSON data) of `kind` for the version `ref` names; return it as stored."""
        _check_kind(kind)
        content = check_json(report, f"the {kind} report")
        info = self.registry.get(ref)

        def insert(s: Session) -> StoredReport:
            version_id = _version_id(s, info.name, info.version)
            row = VersionReport(version_id=version_id, kind=kind, report=content, created_at=utcnow())
            s.add(row)
            s.flush()
            return StoredReport(info.ref, kind, content, iso(row.created_at))

        return self._tx(insert)

    def latest(self, ref: str, kind: str) -> StoredReport | None:
        """Return the newest report of `kind` for the version `ref` names, None when it has none."""
        _check_kind(kind)
        info = self.registry.get(ref)

        def query(s: Session) -> StoredReport | None:
            row = s.scalars(
                select(VersionReport)
                .where(
                    VersionReport.version_id == _version_id(s, info.name, info.version),
                    VersionReport.kind == kind,
                )
                .order_by(VersionReport.id.desc())
                .limit(1)
            ).first()
            return (
                None if row is None else StoredReport(info.ref, kind, dict(row.report), iso(row.created_at))
            )

        return self._read(query)


def _version_id(s: Session, name: str, version: int) -> int:
    """Return the row id of NAME:VERSION, or raise when it went since it was looked up."""
    found = s.scalars(
        select(ModelVersion.id).join(Model).where(Model.name == name, ModelVersion.version == version)
    ).first()
    if found is None:
        raise NotFoundError(f"model {name!r} has no version {version}")
    return found
