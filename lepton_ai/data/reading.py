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

    def few(self, files: list[SourceFile]) -> list[FileRead]:
        """Read, hash and check `files` in order."""
        return [
            read_file(self.src, self.fmt, f, self.known, self.schema, self.unchanged.get(f.path))
            for f in files
        ]


def read_file(
    src: Source,
    fmt: str,
    f: SourceFile,
    known: dict[str, dict[str, Any]],
    schema: dict[str, Any] | None,
    same_path: dict[str, Any] | None,
) -> FileRead:
    if (
        same_path is not None
        and f.mtime is not None
        and (same_path[m.SIZE], same_path.get(m.MTIME)) == (f.size, f.mtime)
    ):
        # as the previous version read it
        return FileRead(f, same_path[m.KEY], None, facts_of(same_path), None)
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
