"""A dataset version's manifest: a Parquet table of one row per record. A folder's records are named by
their sha256 (`_key`) and found in a pack (`_pack`, `_offset`, `_length`); a table's rows are the records
themselves, keyed by a 64-bit hash of their cells. Every record has its label and split; our columns start
with `_`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

KEY, SPLIT, ROW = "_key", "_split", "_row"
# a folder's records
PATH, LABEL, SIZE, MTIME = "_path", "_label", "_size", "_mtime"
PACK, OFFSET, LENGTH = "_pack", "_offset", "_length"
MODE, WIDTH, HEIGHT, PHASH = "_mode", "_width", "_height", "_phash"


def read_manifest(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Return the manifest at `path` (only `columns`, if given)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pandas()


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` as a manifest at `path`."""
    frame.reset_index(drop=True).to_parquet(path, index=False)


def as_rows(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """Return the manifest's rows as dicts (through Arrow: ten times faster than pandas' own)."""
    import pyarrow as pa

    return pa.Table.from_pandas(manifest, preserve_index=False).to_pylist()


def previous_splits(manifest: pd.DataFrame | None) -> dict[str, str]:
    """Return each record's split in an earlier version's manifest, by key."""
    if manifest is None:
        return {}
    return dict(zip(manifest[KEY], manifest[SPLIT]))
