"""A folder of files (images or texts, a folder per class) read into a version: each file read and hashed on a
pool of threads, a new one checked and packed, one an earlier version holds taken as it was."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lepton_ai.data import checks
from lepton_ai.data import manifest as m
from lepton_ai.data.packs import PackWriter
from lepton_ai.data.reading import FileRead, Reading
from lepton_ai.data.sources import Source, SourceFile
from lepton_ai.data.tally import Found, Tally
from lepton_ai.errors import InvalidInputError
from lepton_ai.store import ArtifactStore

# files read, hashed and checked at once (memory stays bounded whatever the folder's size), and by one task
_CHUNK, _PER_TASK = 1024, 32


def read_folder(
    src: Source,
    fmt: str,
    previous: pd.DataFrame | None,
    schema: dict[str, Any] | None,
    store: ArtifactStore,
    options: FolderOptions,
) -> Found:
    """Return the records of a folder source: new files checked against `schema` and packed into `store`. From
    the source of the previous version, a file of the same path, size and modification time is taken as it
    was, without reading it (as DVC and git do)."""
    files = src.files(fmt)
    rows_before = [] if previous is None else m.as_rows(previous)
    known = {row[m.KEY]: row for row in rows_before}
    unchanged = {row[m.PATH]: row for row in rows_before} if options.same_source else {}
    reading = Reading(src, fmt, known, unchanged, schema)
    tally, rows, seen = Tally(), [], dict[str, str]()
    packs = PackWriter(store)
    if options.ray_address:
        from lepton_ai.data.on_ray import read_on_ray

        reads = read_on_ray(reading, files, options.ray_address)
    else:
        reads = _read_here(reading, files, options.workers)
    with progress_bar(options.progress) as bar:
        task = bar.add_task(f"adding {src.url}", total=len(files))
        for read in reads:
            bar.advance(task)
            if read.problem:
                tally.quarantine(read.file.path, read.problem)
            elif read.key in seen:
                tally.duplicate(read.file.path, seen[read.key])
            else:
                seen[read.key] = read.file.path
                rows.append(_row(read, packs, known.get(read.key)))
    keys = packs.close()
    if not rows:
        raise InvalidInputError(f"{src.url}: every file was left out ({tally.quarantined[0]['reason']}, …)")
    frame = pd.DataFrame(rows)
    # a new file's pack is known by its number until the packs are stored
    frame[m.PACK] = [keys[p] if isinstance(p, int) else p for p in frame[m.PACK]]
    if m.PHASH in frame:
        _near_duplicates(frame, tally)
    return Found(frame, schema or _schema(fmt, frame), tally, packs.stored_bytes)


@dataclass(frozen=True)
class FolderOptions:
    """Where a folder's files are read (threads here, or a Ray cluster's workers through Ray Data), whether
    the source is the previous version's, and whether progress is shown."""

    workers: int = 8
    ray_address: str | None = None
    same_source: bool = False
    progress: bool = False


def _read_here(reading: Reading, files: list[SourceFile], workers: int) -> Iterator[FileRead]:
    """Yield each file read, hashed and checked, in order, on `workers` threads."""
    with ThreadPoolExecutor(workers) as pool:
        for chunk in _chunks(files, _CHUNK):
            # a task reads several files: a hop to a thread per small file costs more than reading it
            for few in pool.map(reading.few, _chunks(chunk, _PER_TASK)):
                yield from few


def _row(read: FileRead, packs: PackWriter, before: dict[str, Any] | None) -> dict[str, Any]:
    """Return a file's manifest row: its bytes packed if new, else where an earlier version keeps them."""
    if read.raw is not None:
        slot = packs.add(read.raw)
        where: dict[str, Any] = {m.PACK: slot.pack, m.OFFSET: slot.offset, m.LENGTH: slot.length}
    else:
        assert before is not None
        where = {m.PACK: before[m.PACK], m.OFFSET: before[m.OFFSET], m.LENGTH: before[m.LENGTH]}
    f = read.file
    row = {m.KEY: read.key, m.PATH: f.path, m.LABEL: f.label, m.SIZE: f.size, m.MTIME: f.mtime, **where}
    if read.facts is not None:
        facts = read.facts
        row.update({m.MODE: facts.mode, m.WIDTH: facts.width, m.HEIGHT: facts.height, m.PHASH: facts.phash})
    return row


def _schema(fmt: str, frame: pd.DataFrame) -> dict[str, Any]:
    facts = (
        [
            checks.ImageFacts(*row)
            for row in frame[[m.MODE, m.WIDTH, m.HEIGHT, m.PHASH]].itertuples(index=False)
        ]
        if m.MODE in frame
        else []
    )
    return checks.file_schema(fmt, list(frame[m.LABEL]), facts)


def _near_duplicates(frame: pd.DataFrame, tally: Tally) -> None:
    """Note each image whose perceptual hash equals an earlier one's (the same picture re-encoded or
    resized)."""
    first: dict[str, str] = {}
    for path, phash in zip(frame[m.PATH], frame[m.PHASH]):
        if phash in first:
            tally.near_duplicate(path, first[phash])
        else:
            first[phash] = path


def _chunks(files: list[SourceFile], size: int) -> Iterator[list[SourceFile]]:
    for at in range(0, len(files), size):
        yield files[at : at + size]


def progress_bar(show: bool) -> Progress:
    """Return a progress bar of records read (shown only if `show`)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=not show)
