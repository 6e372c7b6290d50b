"""A dataset version's manifest: a Parquet table of one row per record. A folder's records are named by
their sha256 (`_key`) and found in a pack (`_pack`, `_offset`, `_length`); a table's rows are the records
themselves, keyed by a 64-bit hash of their cells. Every record has its label and split; our columns start
with `_`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

KEY, SPLIT, ROW = "_key", "_split", "_row"
# a folder's records
PATH, LABEL, SIZE, MTIME = "_path", "_label", "_size", "_mtime"
PACK, OFFSET, LENGTH = "_pack", "_offset", "_length"
MODE, WIDTH, HEIGHT, PHASH = "_mode", "_width", "_height", "_phash"


def read_manifest(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Return the manifest at `path` (only `columns`, if given); its texts are Arrow-backed (walk a column
    through `.tolist()`: cell by cell costs ten times as much)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pandas()


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` as a manifest at `path`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    # a dictionary only where values repeat: on keys and paths it costs time and saves nothing
    pq.write_table(table, path, use_dictionary=[c for c in (PACK, LABEL, MODE, SPLIT) if c in frame])


def previous_splits(manifest: pd.DataFrame | None) -> dict[str, str]:
    """Return each record's split in an earlier version's manifest, by key."""
    if manifest is None:
        return {}
    return dict(zip(manifest[KEY].tolist(), manifest[SPLIT].tolist()))
