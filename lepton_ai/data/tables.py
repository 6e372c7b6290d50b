"""A table (CSV, JSONL, Parquet) read into a version in batches: cells typed by the schema (inferred from the
first batch of the first version), rows checked against its ranges and label set, exact duplicates dropped;
the rows themselves are the manifest, each keyed by a 64-bit hash of its cells."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lepton_ai.data import checks
from lepton_ai.data import manifest as m
from lepton_ai.data.folders import progress_bar
from lepton_ai.data.sources import Source
from lepton_ai.data.tally import Found, Tally
from lepton_ai.errors import InvalidInputError


def read_table(
    src: Source, fmt: str, schema: dict[str, Any] | None, label: str, text: str | None, progress: bool
) -> Found:
    """Return the rows of a table source, typed and checked against `schema` (inferred if None)."""
    if schema is not None:
        label, text = schema["label"], schema["text"]
    types = None if schema is None else {name: spec["type"] for name, spec in schema["columns"].items()}
    tally, kept, seen = Tally(), [], dict[str, int]()
    ranges: dict[str, list[float]] = {}
    with progress_bar(progress) as bar:
        task = bar.add_task(f"adding {src.url}", total=None)
        for frame, unreadable in src.tables(fmt):
            for bad in unreadable:
                tally.quarantine(bad.row, bad.reason)
            if types is None:
                types = _types(src, frame, label, text)
            good, problems = checks.typed(frame, types)
            if schema is not None:
                problems += checks.table_problems(good, schema)
            for bad in problems:
                tally.quarantine(bad.row, bad.reason)
            good = good.drop(index=[b.row for b in problems], errors="ignore")
            kept.append(_unique(good, seen, tally))
            checks.widen(ranges, kept[-1], types)
            bar.advance(task, len(frame))
    if not kept or not sum(len(k) for k in kept):
        raise InvalidInputError(f"{src.url} holds no rows that pass their checks")
    frame = pd.concat(kept)
    frame[m.ROW] = frame.index.to_numpy()
    assert types is not None
    classes = sorted(frame[label].astype(str).unique())
    return Found(frame, schema or checks.table_schema(types, ranges, classes, label, text), tally, 0)


def _types(src: Source, frame: pd.DataFrame, label: str, text: str | None) -> dict[str, str]:
    """Return the column types the first batch shows, after checking the label and text columns are there."""
    for role, column in (("label", label), ("text", text)):
        if column is not None and column not in frame.columns:
            raise InvalidInputError(
                f"{src.url} has no {role} column {column!r} (columns: {', '.join(map(str, frame.columns))}); "
                f"name it with --{role}"
            )
    return checks.column_types(frame, label, text)


def _unique(frame: pd.DataFrame, seen: dict[str, int], tally: Tally) -> pd.DataFrame:
    """Return `frame` less the rows that repeat a row kept before, keyed by a hash of their cells."""
    keys = [f"{h:016x}" for h in pd.util.hash_pandas_object(frame, index=False).to_numpy()]
    keep = []
    for row, key in zip(frame.index, keys):
        first = seen.setdefault(key, int(row))
        if first != row:
            tally.duplicate(int(row), first)
        keep.append(first == row)
    out = frame[keep].copy()
    out[m.KEY] = [k for k, k_ok in zip(keys, keep) if k_ok]
    return out
