"""Where Lepton keeps its state, read from the environment each time it is asked."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Return LEPTON_HOME (default ~/.lepton), the root of all local state."""
    return Path(os.environ.get("LEPTON_HOME") or Path.home() / ".lepton").expanduser()


def db_url() -> str:
    """Return LEPTON_DB_URL, or the SQLAlchemy URL of the SQLite file under LEPTON_HOME."""
    url = os.environ.get("LEPTON_DB_URL")
    return url if url else f"sqlite:///{home() / 'registry.db'}"


def artifacts_url() -> str:
    """Return LEPTON_ARTIFACTS, or the artifacts directory under LEPTON_HOME."""
    url = os.environ.get("LEPTON_ARTIFACTS")
    return url if url else str(home() / "artifacts")
