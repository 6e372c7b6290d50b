"""Reading one file of a folder source: its bytes and their sha256, then (if no earlier version holds them)
its decoding and checks — the same whether a thread here or a Ray worker does it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lepton_ai.data import checks
from lepton_ai.data import manifest as m
from lepton_ai.data.sources import Source, SourceFile


@dataclass(frozen=True)
class FileRead:
    """One file read and hashed: its key, its bytes if it is new, what the image is, or why it is left out."""

    file: SourceFile
    key: str
    raw: bytes | None
    facts: checks.ImageFacts | None
    problem: str | None


@dataclass(frozen=True)
class Reading:
    """How a folder's files are read: the source and format, the records earlier versions hold (by key) and
    the previous version's files by path (taken as they were when unchanged), and the schema to check."""

    src: Source
    fmt: str
    known: dict[str, dict[str, Any]]
    unchanged: dict[str, dict[str, Any]]
    schema: dict[str, Any] | None

    def before(self, f: SourceFile) -> FileRead | None:
        """Return file `f` as the previous version read it if it is unchanged there (the same path, size and
        modification time, as DVC and git judge), else None."""
        same = self.unchanged.get(f.path)
        if same is None or f.mtime is None or (same[m.SIZE], same.get(m.MTIME)) != (f.size, f.mtime):
            return None
        return FileRead(f, same[m.KEY], None, facts_of(same), None)

    def few(self, files: list[SourceFile]) -> list[FileRead]:
        """Read, hash and check `files` in order."""
        self.src.prefetch([f.path for f in files])
        return [read_file(self.src, self.fmt, f, self.known, self.schema) for f in files]

    def __getstate__(self) -> dict[str, Any]:
        # a worker reads only files that changed: the previous version's by path stay here
        return {**self.__dict__, "unchanged": {}}


def read_file(
    src: Source, fmt: str, f: SourceFile, known: dict[str, dict[str, Any]], schema: dict[str, Any] | None
) -> FileRead:
    """Return file `f` read and hashed, and decoded and checked unless an earlier version holds its bytes."""
    raw = src.read(f.path)
    key = hashlib.sha256(raw).hexdigest()
    before = known.get(key)
    if before is not None:
        # checked when it was first stored
        return FileRead(f, key, None, facts_of(before), None)
    try:
        facts = checks.check_image(f.path, raw) if fmt == "imagefolder" else None
        if fmt == "text":
            checks.check_text(raw)
    except checks.BadRecord as e:
        return FileRead(f, key, None, None, str(e))
    problem = checks.file_problem(schema, f.label, facts) if schema else None
    return FileRead(f, key, raw, facts, problem)


def facts_of(row: dict[str, Any]) -> checks.ImageFacts | None:
    """Return the facts of an image as a manifest row records them (None for a text)."""
    if m.MODE not in row:
        return None
    return checks.ImageFacts(row[m.MODE], row[m.WIDTH], row[m.HEIGHT], row[m.PHASH])
