"""Where Lepton keeps its state, read from the environment each time it is asked."""

from __future__ import annotations

import math
import os
from pathlib import Path

from lepton_ai.errors import InvalidInputError


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


def heartbeat_s() -> float:
    """Return LEPTON_HEARTBEAT_S (default 10), the seconds between a running service's heartbeats."""
    text = os.environ.get("LEPTON_HEARTBEAT_S")
    if not text:
        return 10.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInputError(f"LEPTON_HEARTBEAT_S must be a positive number of seconds, not {text!r}")
    return seconds
