"""Where a dataset's records come from: a folder of files (images or texts, one folder per class) or a table
(CSV, JSONL, Parquet), local or at any fsspec URL (`s3://…`), listed once and read as a stream."""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import fsspec
import numpy as np
import pandas as pd

from lepton_ai.errors import InvalidInputError, NotFoundError

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
FILE_FORMATS = {"imagefolder": IMAGE_SUFFIXES, "text": (".txt",)}
TABLE_FORMATS = {"csv": (".csv",), "jsonl": (".jsonl", ".ndjson", ".json"), "parquet": (".parquet",)}
FORMATS = (*FILE_FORMATS, *TABLE_FORMATS)
# rows decoded and checked at once: bounded memory whatever the table's size
BATCH_ROWS = 65536


class SourceFile(NamedTuple):
    """One file of a folder source: its path relative to the source, its class (its folder), size and
    modification time."""

    path: str
    label: str
    size: int
    # None where the filesystem gives no modification time
    mtime: float | None = None


class Listed(NamedTuple):
    """A file as a listing gives it: size, modification time (None where the filesystem has none), and where
    it really is if it is, or is under, a link to somewhere outside the source."""

    size: int
    mtime: float | None
    outside: str | None


@dataclass(frozen=True)
class BadRow:
    """A table row left out, and why (its 1-based row number in the source)."""

    row: int
    reason: str


class Source:
    """A local path or fsspec URL to read records from."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
            found = self.fs.exists(self.root)
        except (ValueError, ImportError, OSError) as e:
            raise InvalidInputError(f"cannot read {url}: {e}") from None
        if not found:
            raise NotFoundError(f"no such file or folder: {url}")
        self.local = "file" in _protocols(self.fs)
        self._found: dict[str, Listed] | None = None

    def guess_format(self) -> str:
        """Return the format the source's name or files suggest: a table by its suffix, else a folder of
        images or of texts, whichever it holds more of."""
        if not self.fs.isdir(self.root):
            suffix = posixpath.splitext(self.root)[1].lower()
            found = next((fmt for fmt, suffixes in TABLE_FORMATS.items() if suffix in suffixes), None)
            if found is None:
                raise InvalidInputError(f"{self.url}: cannot tell its format from {suffix!r}: give --format")
            return found
        names = ["." + p.rsplit(".", 1)[-1].lower() for p in self._listing()]
        counts = {fmt: sum(n in suffixes for n in names) for fmt, suffixes in FILE_FORMATS.items()}
        return max(counts, key=lambda fmt: counts[fmt])

    def files(self, fmt: str) -> list[SourceFile]:
        """Return the files of a folder source in `fmt` (by suffix), sorted, each labelled by its folder;
        refuse a source that holds none, a file outside any class folder, or a link that leaves the source."""
        if not self.fs.isdir(self.root):
            raise InvalidInputError(f"{self.url} is a file: a {fmt} source is a folder of class folders")
        suffixes = FILE_FORMATS[fmt]
        prefix = len(self.root.rstrip("/")) + 1
        found = []
        for path, (size, mtime, outside) in sorted(self._listing().items()):
            rel = path[prefix:]
            if not rel.lower().endswith(suffixes):
                continue
            if outside:
                raise InvalidInputError(
                    f"{path} links outside the source ({outside}): copy the file in instead"
                )
            label = rel.split("/")[0] if "/" in rel else ""
            if not label:
                raise InvalidInputError(
                    f"{self.url}/{rel} is in no class folder: expected {self.url}/<class>/"
                )
            found.append(SourceFile(rel, label, size, mtime))
        if not found:
            raise InvalidInputError(
                f"{self.url} holds no {fmt} files ({', '.join(suffixes)}) in class folders"
            )
        return found

    def _listing(self) -> dict[str, Listed]:
        """Return every file under the source with its size and time (listed once)."""
        if self._found is None:
            self._found = _walk(self.root) if self.local else _find(self.fs, self.root)
        return self._found

    def __getstate__(self) -> dict[str, Any]:
        # the listing stays with whoever listed: a worker process only reads
        return {**self.__dict__, "_found": None}

    def prefetch(self, rels: list[str]) -> None:
        """Ask the kernel to start reading local files `rels` now, all at once: read one by one next, they are
        then mostly in memory already (a disk serves many requests at once far faster than one by one)."""
        if not self.local or not hasattr(os, "posix_fadvise"):
            return
        for rel in rels:
            try:
                fd = os.open(os.path.join(self.root, rel), os.O_RDONLY)
            except OSError:
                # reading it will say what is wrong
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def read(self, rel: str) -> bytes:
        """Return the bytes of file `rel` of the source."""
        if self.local:
            # a plain open: fsspec's costs as much again as reading a small file
            with open(os.path.join(self.root, rel), "rb") as f:
                return f.read()
        with self.fs.open(posixpath.join(self.root, rel), "rb") as f:
            return bytes(f.read())

    def tables(self, fmt: str) -> Iterator[tuple[pd.DataFrame, list[BadRow]]]:
        """Yield the table as DataFrames of at most BATCH_ROWS rows (CSV cells as text, to be typed by the
        schema), each with the rows that could not be read at all; the index is the 1-based source row."""
        if self.fs.isdir(self.root):
            raise InvalidInputError(f"{self.url} is a folder: a {fmt} source is one file")
        reader = {"csv": _csv_batches, "jsonl": _jsonl_batches, "parquet": _parquet_batches}[fmt]
        with self.fs.open(self.root, "rb") as f:
            yield from reader(f)


def _find(fs: Any, root: str) -> dict[str, Listed]:
    """Return every file under `root` on fsspec filesystem `fs` with its size and modification time."""
    found = {}
    for path, info in fs.find(root, detail=True).items():
        mtime = info.get("mtime")
        found[path] = Listed(int(info.get("size") or 0), float(mtime) if mtime else None, None)
    return found


def _walk(root: str) -> dict[str, Listed]:
    """Return every file under the local folder `root` with its size and modification time, and, for a file
    that is or is under a link to somewhere outside `root`, where it really is (a scandir walk with one stat a
    file: fsspec's listing costs several times as much)."""
    real_root = os.path.realpath(root)
    found: dict[str, Listed] = {}
    folders, seen = [root], set()
    while folders:
        folder = folders.pop()
        real = os.path.realpath(folder)
        # a link back up the tree would be walked for ever
        if real in seen:
            continue
        seen.add(real)
        folder_outside = real if not _inside(real, real_root) else None
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_dir():
                        folders.append(entry.path)
                        continue
                    stat = entry.stat()
                except OSError:
                    # a dangling link: nothing to read
                    continue
                outside = folder_outside
                if outside is None and entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    outside = target if not _inside(target, real_root) else None
                found[entry.path] = Listed(stat.st_size, stat.st_mtime, outside)
    return found


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _csv_batches(f: Any) -> Iterator[tuple[pd.DataFrame, list[BadRow]]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    bad: list[BadRow] = []

    def ragged(row: Any) -> str:
        bad.append(
            BadRow(row.number or 0, f"expected {row.expected_columns} cells, got {row.actual_columns}")
        )
        return "skip"

    header = next(csv.reader([f.readline().decode("utf-8", errors="replace")]), [])
    f.seek(0)
    # one block at a time, so the ragged rows reported are those of the block just read
    reader = pacsv.open_csv(
        f,
        read_options=pacsv.ReadOptions(block_size=4 << 20, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=ragged),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}),
    )
    # the header is line 1
    line = 2
    for batch in reader:
        frame = batch.to_pandas()
        # the lines this block spans, less those skipped as ragged
        lines = np.arange(line, line + len(frame) + len(bad))
        lines = lines[~np.isin(lines, [b.row for b in bad])][: len(frame)]
        frame.index = pd.Index(lines)
        line = int(lines[-1]) + 1 if len(lines) else line + len(bad)
        for at in range(0, max(len(frame), 1), BATCH_ROWS):
            yield frame.iloc[at : at + BATCH_ROWS], bad if at == 0 else []
        bad = []


def _jsonl_batches(f: Any) -> Iterator[tuple[pd.DataFrame, list[BadRow]]]:
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    bad: list[BadRow] = []
    for n, line in enumerate(io.TextIOWrapper(f, encoding="utf-8", errors="replace"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(BadRow(n, f"not valid JSON: {e.msg}"))
            continue
        if not isinstance(row, dict):
            bad.append(BadRow(n, f"a JSON {type(row).__name__}, not an object"))
            continue
        rows.append(row)
        numbers.append(n)
        if len(rows) == BATCH_ROWS:
            yield pd.DataFrame(rows, index=numbers), bad
            rows, numbers, bad = [], [], []
    if rows or bad:
        yield pd.DataFrame(rows, index=numbers), bad


def _parquet_batches(f: Any) -> Iterator[tuple[pd.DataFrame, list[BadRow]]]:
    import pyarrow.parquet as pq

    start = 1
    for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
        frame = batch.to_pandas()
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        yield frame, []
