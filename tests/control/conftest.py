"""Shared set-up of the control tests: a registry in the test's LEPTON_HOME and the dashboard over it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lepton_ai.control import dashboard_app
from lepton_ai.store import Registry


def artifact(tmp_path: Path, text: str) -> Path:
    """Return a small file to register, its content `text`."""
    path = tmp_path / f"{text}.bin"
    path.write_text(text)
    return path


@pytest.fixture
def registry(lepton_home: Path) -> Registry:
    return Registry()


@pytest.fixture
def api(registry: Registry) -> TestClient:
    return TestClient(dashboard_app(registry))
