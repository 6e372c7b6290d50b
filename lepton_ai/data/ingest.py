"""`lepton data add`: a source read as a stream, every record checked, exact duplicates removed, splits
assigned, and the next immutable version of the dataset registered once everything it needs is stored.

A folder's files go into content-addressed packs, and a file an earlier version holds is neither decoded nor
stored again. A table's rows are typed by the schema, checked (pandera) and kept in the manifest itself."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lepton_ai.data import manifest as m
from lepton_ai.data import splits
from lepton_ai.data.datasets import BUILTIN
from lepton_ai.data.folders import FolderOptions, read_folder
from lepton_ai.data.sources import FILE_FORMATS, FORMATS, Source
from lepton_ai.data.tally import Tally
from lepton_ai.errors import InvalidInputError
from lepton_ai.store.datasets import Datasets, DatasetVersionInfo, NewVersion
from lepton_ai.store.refs import check_name


@dataclass(frozen=True)
class AddOptions:
    """How `add` reads a source: its format (guessed if None), the label and text columns of a table, the
    splits' fractions and seed, whether a bad record fails the whole add, and where a folder's files are read
    (threads here, or a Ray cluster)."""

    format: str | None = None
    label: str = "label"
    text: str | None = None
    fractions: splits.Fractions = splits.Fractions(0.7, 0.1, 0.2)
    seed: int = 0
    strict: bool = False
    # None: a process a core for a local folder, 16 threads for a remote one
    workers: int | None = None
    progress: bool = False
    # a Ray cluster (HOST:PORT, or 'auto') whose workers read and check a folder's files, through Ray Data
    ray_address: str | None = None


def add(
    name: str, source: str, options: AddOptions | None = None, datasets: Datasets | None = None
) -> DatasetVersionInfo:
    """Read `source`, check and clean its records, and register them as the next version of dataset `name`."""
    with _cycles_uncollected():
        return _add(name, source, options or AddOptions(), datasets or Datasets())


@contextmanager
def _cycles_uncollected() -> Iterator[None]:
    """Pause the cyclic garbage collector: it would walk every live object (torch's, pandas') again and again
    while tens of thousands of small records, none of them in a cycle, are made (a third of a re-add)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _add(name: str, source: str, options: AddOptions, datasets: Datasets) -> DatasetVersionInfo:
    check_name(name, "dataset")
    if name in BUILTIN:
        raise InvalidInputError(f"{name!r} is the name of a built-in dataset: choose another")
    src = Source(source)
    fmt = options.format or src.guess_format()
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    known = datasets.find(name)
    previous = (
        m.read_manifest(datasets.manifest(datasets.get(name))) if known and known.num_versions else None
    )
    schema = datasets.schema(name) if known else None
    if fmt in FILE_FORMATS:
        same = bool(known and known.num_versions) and datasets.get(name).source == source
        where = FolderOptions(options.workers, options.ray_address, same, options.progress)
        found = read_folder(src, fmt, previous, schema, datasets.artifacts, where)
    else:
        from lepton_ai.data.tables import read_table

        found = read_table(src, fmt, schema, options.label, options.text, options.progress)
    found.tally.check_strict(options.strict)
    frame, schema, tally = found.frame, found.schema, found.tally
    label = m.LABEL if fmt in FILE_FORMATS else schema["label"]
    frame[m.SPLIT] = splits.assign(
        frame[label].astype(str).to_numpy(),
        frame[m.KEY].to_numpy(),
        options.fractions,
        options.seed,
        m.previous_splits(previous),
        frame[m.PHASH].to_numpy() if m.PHASH in frame else None,
    )
    stats = _stats(frame, label, previous, tally, options)
    return register_frame(datasets, name, frame, fmt, schema, stats, source, found.stored_bytes)


def register_frame(
    datasets: Datasets,
    name: str,
    frame: pd.DataFrame,
    fmt: str,
    schema: dict[str, Any],
    stats: dict[str, Any],
    source: str,
    stored_bytes: int,
) -> DatasetVersionInfo:
    """Write `frame` as a manifest and register it as the next version of `name`, with the packs it names."""
    with tempfile.TemporaryDirectory(prefix="lepton-data-") as tmp:
        path = Path(tmp) / "manifest.parquet"
        m.write_manifest(frame, path)
        new = NewVersion(
            manifest=path,
            # a table's versions may come from any table format
            format=fmt if fmt in FILE_FORMATS else "table",
            records=len(frame),
            size_bytes=int(frame[m.SIZE].sum()) if m.SIZE in frame else path.stat().st_size,
            stored_bytes=stored_bytes,
            stats=stats,
            schema=schema,
            source=source,
            objects=sorted(set(frame[m.PACK])) if m.PACK in frame else [],
        )
        return datasets.register(name, new)


def _stats(
    frame: pd.DataFrame, label: str, previous: pd.DataFrame | None, tally: Tally, options: AddOptions
) -> dict[str, Any]:
    """Return what `lepton data show` tells of a version: counts by class and split, what was new, what was
    left out and why, and how the splits were made."""
    return {
        **counts(frame, label, previous),
        "fractions": list(options.fractions),
        "seed": options.seed,
        **tally.to_dict(),
    }


def counts(frame: pd.DataFrame, label: str, previous: pd.DataFrame | None) -> dict[str, Any]:
    """Return a manifest's records by class and by split, and how many an earlier version did not have."""
    before = set(previous[m.KEY].tolist()) if previous is not None else set()
    return {
        "classes": {str(k): int(v) for k, v in frame[label].astype(str).value_counts().sort_index().items()},
        "splits": {s: int((frame[m.SPLIT] == s).sum()) for s in splits.SPLITS},
        "new_records": sum(key not in before for key in frame[m.KEY].tolist()),
    }
