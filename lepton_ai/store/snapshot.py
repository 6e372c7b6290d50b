"""A consistent copy of a SQLite registry while others may be writing it: SQLite's online backup, not `cp`
(which can copy the database and its write-ahead log from two different moments).

`python -m lepton_ai.store.snapshot SOURCE DEST` is what a Kubernetes pod's init container runs to take the
registry from a read-only store into its own LEPTON_HOME."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path


def snapshot(source: str | Path, dest: str | Path) -> Path:
    """Copy the SQLite database `source` to `dest` as of one committed moment; return `dest`."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.unlink(missing_ok=True)
    # read-only: the source may sit on a read-only volume, and must never be changed by a copy
    src = sqlite3.connect(f"file:{Path(source).resolve()}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(tmp)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()
    os.replace(tmp, dest)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m lepton_ai.store.snapshot SOURCE DEST")
    snapshot(sys.argv[1], sys.argv[2])
