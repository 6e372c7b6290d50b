"""Reports added to a version after it was registered (privacy audits): stored in one transaction, the newest
one read back, refused when not JSON data, and removed with their version — on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.store import Registry
from lepton_ai.store.reports import VersionReports
from lepton_ai.store.schema import VersionReport


def test_the_newest_report_of_a_version_is_read_back_and_goes_with_it(db_url: str, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    registry = Registry(db_url=db_url)
    registry.register("m", weights)
    registry.register("m", weights)
    reports = VersionReports(db_url)
    assert reports.latest("m:1", "privacy_audit") is None
    reports.add("m:1", "privacy_audit", {"auc": 0.7})
    newest = reports.add("m:1", "privacy_audit", {"auc": 0.6})
    assert newest.ref == "m:1" and newest.to_dict() == {"auc": 0.6, "recorded_at": newest.created_at}
    assert reports.latest("m:1", "privacy_audit") == newest
    # the latest version has none of its own
    assert reports.latest("m", "privacy_audit") is None
    with pytest.raises(InvalidInputError, match="JSON data without NaN"):
        reports.add("m:1", "privacy_audit", {"auc": float("nan")})
    with pytest.raises(InvalidInputError, match="kind is one of privacy_audit"):
        reports.add("m:1", "explanations", {})
    with pytest.raises(NotFoundError):
        reports.add("m:7", "privacy_audit", {})
    registry.remove("m:1")
    with registry.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(VersionReport)).scalar_one() == 0
