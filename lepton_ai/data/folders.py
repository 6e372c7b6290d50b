"""A folder of files (images or texts, a folder per class) read into a version: each file read and hashed on a
pool of threads, a new one checked and packed, one an earlier version holds taken as it was."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lepton_ai.data import checks
from lepton_ai.data import manifest as m
from lepton_ai.data.packs import PackWriter
from lepton_ai.data.sources import Source, SourceFile
from lepton_ai.data.tally import Found, Tally
from lepton_ai.errors import InvalidInputError
from lepton_ai.store import ArtifactStore

# files read, hashed and checked at once (memory stays bounded whatever the folder's size), and by one task
_CHUNK, _PER_TASK = 1024, 32


@dataclass(frozen=True)
class _Read:
    """One file read and hashed: its key, its bytes if it is new, what the image is, or why it is left out."""

    file: SourceFile
    key: str
    raw: bytes | None
    facts: checks.ImageFacts | None
    problem: str | None


def read_folder(
    src: Source,
    fmt: str,
    previous: pd.DataFrame | None,
    schema: dict[str, Any] | None,
    store: ArtifactStore,
    workers: int,
    progress: bool,
    same_source: bool = False,
) -> Found:
    """Return the records of a folder source: new files checked against `schema` and packed into `store`. From
    the source of the previous version, a file of the same path, size and modification time is taken as it
    was, without reading it (as DVC and git do)."""
    files = src.files(fmt)
    rows_before = [] if previous is None else m.as_rows(previous)
    known = {row[m.KEY]: row for row in rows_before}
    unchanged = {row[m.PATH]: row for row in rows_before} if same_source else {}
    tally, rows, seen = Tally(), [], dict[str, str]()
    packs = PackWriter(store)
    with progress_bar(progress) as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task(f"adding {src.url}", total=len(files))

        def read_all(few: list[SourceFile]) -> list[_Read]:
            return [_read(src, fmt, f, known, schema, unchanged.get(f.path)) for f in few]

        for chunk in _chunks(files, _CHUNK):
            # a task reads several files: a hop to a thread per small file costs more than reading it
            for read in (r for few in pool.map(read_all, _chunks(chunk, _PER_TASK)) for r in few):
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


def _read(
    src: Source,
    fmt: str,
    f: SourceFile,
    known: dict[str, dict[str, Any]],
    schema: dict[str, Any] | None,
    same_path: dict[str, Any] | None,
) -> _Read:
    if (
        same_path is not None
        and f.mtime is not None
        and (same_path[m.SIZE], same_path.get(m.MTIME)) == (f.size, f.mtime)
    ):
        # as the previous version read it
        return _Read(f, same_path[m.KEY], None, _facts(same_path), None)
    raw = src.read(f.path)
    key = hashlib.sha256(raw).hexdigest()
    before = known.get(key)
    if before is not None:
        # checked when it was first stored
        return _Read(f, key, None, _facts(before), None)
    try:
        facts = checks.check_image(f.path, raw) if fmt == "imagefolder" else None
        if fmt == "text":
            checks.check_text(raw)
    except checks.BadRecord as e:
        return _Read(f, key, None, None, str(e))
    problem = checks.file_problem(schema, f.label, facts) if schema else None
    return _Read(f, key, raw, facts, problem)


def _facts(row: dict[str, Any]) -> checks.ImageFacts | None:
    """Return the facts of an image as a manifest row records them (None for a text)."""
    if m.MODE not in row:
        return None
    return checks.ImageFacts(row[m.MODE], row[m.WIDTH], row[m.HEIGHT], row[m.PHASH])


def _row(read: _Read, packs: PackWriter, before: dict[str, Any] | None) -> dict[str, Any]:
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
