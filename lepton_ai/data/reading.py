"""Reading one file of a folder source: its bytes and their sha256, then (if no earlier version holds them)
its decoding and checks — the same whether a thread here or a Ray worker does it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from lepton_ai.data import checks
from lepton_ai.data import manifest as m
from lepton_ai.data.sources import Source, SourceFile


class FileRead(NamedTuple):
    """One file read and hashed: its key, its bytes if it is new, what the image is, or why it is left out."""

    file: SourceFile
    key: str
    raw: bytes | None
    facts: checks.ImageFacts | None
    problem: str | None
    # the row of the previous version's manifest that holds these bytes (already checked and stored)
    earlier: int | None = None


class Unchanged(NamedTuple):
    """A file of the previous version as its manifest has it: size, modification time, key and row."""

    size: int
    mtime: float | None
    key: str
    row: int


@dataclass(frozen=True)
class Reading:
    """How a folder's files are read: the source and format, the previous version's records (their row in its
    manifest by key, and its files by path: taken as they were when unchanged), and the schema to check."""

    src: Source
    fmt: str
    known: dict[str, int]
    unchanged: dict[str, Unchanged]
    schema: dict[str, Any] | None

    def before(self, f: SourceFile) -> FileRead | None:
        """Return file `f` as the previous version read it if it is unchanged there (the same path, size and
        modification time, as DVC and git judge), else None."""
        same = self.unchanged.get(f.path)
        if same is None or f.mtime is None or (same.size, same.mtime) != (f.size, f.mtime):
            return None
        return FileRead(f, same.key, None, None, None, same.row)

    def few(self, files: list[SourceFile]) -> list[FileRead]:
        """Read, hash and check `files` in order."""
        self.src.prefetch([f.path for f in files])
        return [read_file(self.src, self.fmt, f, self.known, self.schema) for f in files]

    def __getstate__(self) -> dict[str, Any]:
        # a worker reads only files that changed: the previous version's by path stay here
        return {**self.__dict__, "unchanged": {}}


def earlier_records(
    previous: pd.DataFrame | None, same_source: bool
) -> tuple[dict[str, int], dict[str, Unchanged]]:
    """Return the previous version's records by key (their row in its manifest) and, if the source is the
    same, its files by path."""
    if previous is None:
        return {}, {}
    keys = previous[m.KEY].tolist()
    known = {key: row for row, key in enumerate(keys)}
    if not same_source:
        return known, {}
    columns = (previous[c].tolist() for c in (m.PATH, m.SIZE, m.MTIME))
    unchanged = {
        path: Unchanged(size, mtime, key, row)
        for row, (path, size, mtime, key) in enumerate(zip(*columns, keys))
    }
    return known, unchanged


def read_file(
    src: Source, fmt: str, f: SourceFile, known: dict[str, int], schema: dict[str, Any] | None
) -> FileRead:
    """Return file `f` read and hashed, and decoded and checked unless an earlier version holds its bytes."""
    raw = src.read(f.path)
    key = hashlib.sha256(raw).hexdigest()
    earlier = known.get(key)
    if earlier is not None:
        # checked when it was first stored
        return FileRead(f, key, None, None, None, earlier)
    try:
        facts = checks.check_image(f.path, raw) if fmt == "imagefolder" else None
        if fmt == "text":
            checks.check_text(raw)
    except checks.BadRecord as e:
        return FileRead(f, key, None, None, str(e))
    problem = checks.file_problem(schema, f.label, facts) if schema else None
    return FileRead(f, key, raw, facts, problem)
