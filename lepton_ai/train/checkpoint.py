"""Training checkpoints: written atomically, read back with `weights_only=True` (no pickle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to DIRECTORY/last.pt via a temp file and rename; return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final, tmp = directory / LAST, directory / f".{LAST}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    # a kill before this line leaves the previous checkpoint intact
    os.replace(tmp, final)
    return final


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """Return the last complete checkpoint in `directory`, or None when there is none."""
    path = Path(directory) / LAST
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
