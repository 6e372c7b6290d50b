"""Shared set-up of the control tests: a registry in the test's LEPTON_HOME and the dashboard over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lepton_ai.control import dashboard_app
from lepton_ai.store import Registry
from lepton_ai.store.datasets import Datasets, DatasetVersionInfo, NewVersion


def artifact(tmp_path: Path, text: str) -> Path:
    """Return a small file to register, its content `text`."""
    path = tmp_path / f"{text}.bin"
    path.write_text(text)
    return path


def dataset(
    tmp_path: Path, name: str = "scans", source: str = "/data/scans", **stats: Any
) -> DatasetVersionInfo:
    """Register the next version of dataset `name` with the stats `lepton data add` records, some replaced."""
    manifest = tmp_path / f"{name}.parquet"
    manifest.write_bytes(b"a manifest")
    recorded = {
        "classes": {"0": 6, "1": 4},
        "splits": {"train": 7, "val": 1, "test": 2},
        "new_records": 10,
        "fractions": [0.7, 0.1, 0.2],
        "seed": 0,
        "quarantined": 1,
        "duplicates": 1,
        "quarantine": [{"record": "1/bad.png", "reason": "cannot be decoded as PNG"}],
        "duplicate_records": [{"record": "0/b.png", "of": "0/a.png"}],
        **stats,
    }
    schema = {"classes": ["0", "1"], "modes": ["L"]}
    return Datasets().register(
        name, NewVersion(manifest, "imagefolder", 10, 640, 640, recorded, schema, source)
    )


@pytest.fixture
def registry(lepton_home: Path) -> Registry:
    return Registry()


@pytest.fixture
def api(registry: Registry) -> TestClient:
    return TestClient(dashboard_app(registry))
