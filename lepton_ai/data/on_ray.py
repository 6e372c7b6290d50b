"""A folder's files read, hashed, decoded and checked on a Ray cluster's workers through Ray Data: the same
reading (`reading.Reading`) as on this machine's threads, in the same order, for folders larger than its
cores; the driver packs what is new and registers the version as it does locally."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pandas as pd

from lepton_ai.cluster import ray_address, ray_connected
from lepton_ai.data.checks import ImageFacts
from lepton_ai.data.reading import FileRead, Reading
from lepton_ai.data.sources import SourceFile

# files a Ray Data batch holds: big enough to amortise a task, small enough to spread over the workers
_BATCH = 256


def read_on_ray(reading: Reading, files: list[SourceFile], address: str) -> Generator[FileRead, None, None]:
    """Yield each file as `reading` reads it, in order, read by the workers of the Ray cluster at `address`
    (the source must be reachable from them: a shared folder or an fsspec URL)."""
    import ray.data

    with ray_connected(ray_address(address)):
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        items = [{"path": f.path, "label": f.label, "size": f.size, "mtime": f.mtime} for f in files]
        dataset = ray.data.from_items(items).map_batches(
            _Batch(reading), batch_size=_BATCH, batch_format="pandas"
        )
        for f, row in zip(files, dataset.iter_rows()):
            yield _back(f, row)


class _Batch:
    """The function Ray Data maps over batches of files: `reading` applied to each, as columns."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        files = [
            SourceFile(p, label, int(size), None if pd.isna(mtime) else float(mtime))
            for p, label, size, mtime in batch[["path", "label", "size", "mtime"]].itertuples(index=False)
        ]
        reads = self.reading.few(files)
        return pd.DataFrame(
            {
                "key": [r.key for r in reads],
                "raw": [r.raw for r in reads],
                "mode": [r.facts.mode if r.facts else None for r in reads],
                "width": [r.facts.width if r.facts else -1 for r in reads],
                "height": [r.facts.height if r.facts else -1 for r in reads],
                "phash": [r.facts.phash if r.facts else None for r in reads],
                "problem": [r.problem for r in reads],
                "earlier": [-1 if r.earlier is None else r.earlier for r in reads],
            }
        )


def _back(f: SourceFile, row: dict[str, Any]) -> FileRead:
    """Return the read a Ray worker sent back as columns."""
    facts = (
        ImageFacts(row["mode"], int(row["width"]), int(row["height"]), row["phash"]) if row["mode"] else None
    )
    raw = row["raw"]
    problem = row["problem"] if isinstance(row["problem"], str) else None
    earlier = int(row["earlier"])
    return FileRead(
        f, row["key"], None if raw is None else bytes(raw), facts, problem, None if earlier < 0 else earlier
    )
