"""A folder of files (images or texts, a folder per class) read into a version: a file the previous version
holds unchanged taken as it was; the others read and hashed by worker processes (threads for a few), a new one
checked and packed, one an earlier version holds by content taken as it was."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lepton_ai.data import checks
from lepton_ai.data import manifest as m
from lepton_ai.data.packs import PackWriter
from lepton_ai.data.reading import FileRead, Reading, earlier_records
from lepton_ai.data.sources import Source, SourceFile
from lepton_ai.data.tally import Found, Tally
from lepton_ai.errors import InvalidInputError
from lepton_ai.store import ArtifactStore

# files a task reads: a hop to a worker per small file costs more than reading it
_PER_TASK = 64
# files to read from which workers are processes: Pillow decodes a small image holding the GIL, so threads
# convoy (two read slower than one); below it, threads, which start at once and wait on a remote store as one
_PROCESSES_FROM = 2048
# threads reading a remote store's files
_THREADS = 16

T = TypeVar("T")
R = TypeVar("R")


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
    known, unchanged = earlier_records(previous, options.same_source)
    reading = Reading(src, fmt, known, unchanged, schema)
    tally, seen = Tally(), dict[str, str]()
    new_rows, kept = list[dict[str, Any]](), list[FileRead]()
    packs = PackWriter(store)
    # the workers start before the progress bar's thread: a fork copies no threads, but the locks they hold
    with _reads(reading, files, options) as reads, progress_bar(options.progress) as bar:
        task = bar.add_task(f"adding {src.url}", total=len(files))
        for n, read in enumerate(reads, 1):
            if n % _PER_TASK == 0:
                bar.update(task, completed=n)
            if read.problem:
                tally.quarantine(read.file.path, read.problem)
            elif read.key in seen:
                tally.duplicate(read.file.path, seen[read.key])
            else:
                seen[read.key] = read.file.path
                if read.earlier is None:
                    new_rows.append(_new_row(read, packs))
                else:
                    kept.append(read)
        bar.update(task, completed=len(files))
    keys = packs.close()
    if not seen:
        raise InvalidInputError(f"{src.url}: every file was left out ({tally.quarantined[0]['reason']}, …)")
    frame = _frame(previous, kept, new_rows, keys)
    if m.PHASH in frame:
        _near_duplicates(frame, tally)
    return Found(frame, schema or _schema(fmt, frame), tally, packs.stored_bytes)


def _frame(
    previous: pd.DataFrame | None, kept: list[FileRead], new_rows: list[dict[str, Any]], keys: list[str]
) -> pd.DataFrame:
    """Return the version's manifest rows in path order: those of bytes the previous version holds taken from
    its manifest (with their file's path, label, size and time), and the new ones with their packs' keys."""
    new = pd.DataFrame(new_rows)
    if new_rows:
        # a new file's pack is known by its number until the packs are stored
        new[m.PACK] = [keys[p] for p in new[m.PACK].tolist()]
    if kept:
        assert previous is not None
        old = previous.iloc[[read.earlier for read in kept]].drop(columns=m.SPLIT).reset_index(drop=True)
        for column, values in zip((m.PATH, m.LABEL, m.SIZE, m.MTIME), zip(*(read.file for read in kept))):
            old[column] = list(values)
        new = pd.concat([old, new], ignore_index=True) if new_rows else old
    return new.sort_values(m.PATH, kind="stable", ignore_index=True)


@dataclass(frozen=True)
class FolderOptions:
    """Where a folder's files are read (threads here, or a Ray cluster's workers through Ray Data), whether
    the source is the previous version's, and whether progress is shown."""

    # None: a process a core for a local folder, _THREADS threads for a remote one
    workers: int | None = None
    ray_address: str | None = None
    same_source: bool = False
    progress: bool = False


@contextmanager
def _reads(reading: Reading, files: list[SourceFile], options: FolderOptions) -> Iterator[Iterator[FileRead]]:
    """Yield an iterator of each file's read, in order: one the previous version holds unchanged as it was,
    the others read by workers started on entry (here, or a Ray cluster's)."""
    kept = [reading.before(f) for f in files]
    changed = [f for f, before in zip(files, kept) if before is None]
    if options.ray_address:
        from lepton_ai.data.on_ray import read_on_ray

        with closing(read_on_ray(reading, changed, options.ray_address)) as fresh:
            yield _merged(kept, fresh)
        return
    pool, read, size = _pool(reading, len(changed), options.workers)
    with pool:
        tasks = _in_order(pool, read, _chunks(changed, _PER_TASK), ahead=4 * size)
        yield _merged(kept, (r for few in tasks for r in few))


def _merged(kept: list[FileRead | None], fresh: Iterator[FileRead]) -> Iterator[FileRead]:
    """Yield each kept read, and the next fresh one in place of each None."""
    for before in kept:
        yield before if before is not None else next(fresh)


def _pool(
    reading: Reading, count: int, workers: int | None
) -> tuple[Executor, Callable[[list[SourceFile]], list[FileRead]], int]:
    """Return a pool that reads `count` files, its task and its size: for many local files, a process a core,
    started now; else threads (many for a remote store, whose every read waits on the network)."""
    if count < _PROCESSES_FROM or not reading.src.local:
        size = workers or _THREADS
        return ThreadPoolExecutor(size), reading.few, size
    size = workers or os.cpu_count() or 1
    # forked on Linux, as PyTorch's DataLoader does: a spawned worker would run the caller's main script again
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(size, context, initializer=_hold, initargs=(reading,))
    # a first task starts every worker
    pool.submit(int).result()
    return pool, _read_held, size


def _in_order(pool: Executor, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """Yield fn(item) for each item, in order, computed on `pool` at most `ahead` at a time (memory stays
    bounded whatever the number of items)."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# the reading a worker process was started with (sent once, not with each task)
_held: list[Reading] = []


def _hold(reading: Reading) -> None:
    _held.append(reading)


def _read_held(files: list[SourceFile]) -> list[FileRead]:
    return _held[0].few(files)


def _new_row(read: FileRead, packs: PackWriter) -> dict[str, Any]:
    """Return a new file's manifest row, its bytes packed."""
    assert read.raw is not None
    slot = packs.add(read.raw)
    f = read.file
    row = {
        m.KEY: read.key,
        m.PATH: f.path,
        m.LABEL: f.label,
        m.SIZE: f.size,
        m.MTIME: f.mtime,
        m.PACK: slot.pack,
        m.OFFSET: slot.offset,
        m.LENGTH: slot.length,
    }
    if read.facts is not None:
        facts = read.facts
        row.update({m.MODE: facts.mode, m.WIDTH: facts.width, m.HEIGHT: facts.height, m.PHASH: facts.phash})
    return row


def _schema(fmt: str, frame: pd.DataFrame) -> dict[str, Any]:
    """Return the schema of a first version, from each kind of image it holds (mode and size)."""
    kinds = frame[[m.MODE, m.WIDTH, m.HEIGHT]].drop_duplicates() if m.MODE in frame else pd.DataFrame()
    facts = [checks.ImageFacts(*kind) for kind in kinds.itertuples(index=False)]
    return checks.file_schema(fmt, list(frame[m.LABEL].unique()), facts)


def _near_duplicates(frame: pd.DataFrame, tally: Tally) -> None:
    """Note each image whose perceptual hash equals an earlier one's (the same picture re-encoded or
    resized)."""
    first: dict[str, str] = {}
    for path, phash in zip(frame[m.PATH].tolist(), frame[m.PHASH].tolist()):
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
