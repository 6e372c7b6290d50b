"""Records' bytes kept in packs: files of up to PACK_BYTES stored in the artifact store by their content, so
50,000 small files are a few objects rather than 50,000, and a pack that holds the same records
in the same order is stored once however many times it is written."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from lepton_ai.store import ArtifactStore, sha256_of

PACK_BYTES = 64 << 20


class Slot(NamedTuple):
    """Where a record's bytes are: pack number (of this writer), offset and length."""

    pack: int
    offset: int
    length: int


class PackWriter:
    """Appends records' bytes to packs in a temporary folder; `close` stores them and returns their keys."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._folder = tempfile.TemporaryDirectory(prefix="lepton-packs-")
        self._paths: list[Path] = []
        self._file: Any = None
        self._size = 0
        self.stored_bytes = 0

    def add(self, raw: bytes) -> Slot:
        """Append `raw` to the current pack (a new one past PACK_BYTES); return where it went."""
        if self._file is None or self._size + len(raw) > PACK_BYTES and self._size:
            self._roll()
        offset = self._size
        self._file.write(raw)
        self._size += len(raw)
        return Slot(len(self._paths) - 1, offset, len(raw))

    def _roll(self) -> None:
        if self._file is not None:
            self._file.close()
        # one name for every pack: the key is then the content's alone
        path = Path(self._folder.name) / f"{len(self._paths):05d}" / "pack.bin"
        path.parent.mkdir()
        self._paths.append(path)
        self._file = open(path, "wb")  # noqa: SIM115
        self._size = 0

    def close(self) -> list[str]:
        """Store every pack (one the store already holds is not written again); return their keys in order."""
        if self._file is not None:
            self._file.close()
        keys = []
        try:
            for path in self._paths:
                sha = sha256_of(path)
                key = f"objects/{sha[:2]}/{sha}/pack.bin"
                if not self.store.has(key):
                    key = self.store.put(path, fmt="pack").key
                    self.stored_bytes += path.stat().st_size
                keys.append(key)
        finally:
            self._folder.cleanup()
        return keys


def read_records(store: ArtifactStore, slots: Iterator[tuple[str, int, int]]) -> Iterator[bytes]:
    """Yield the bytes at each (pack key, offset, length), each pack fetched once and its sha256 checked."""
    opened: dict[str, Any] = {}
    try:
        for key, offset, length in slots:
            if key not in opened:
                opened[key] = open(store.fetch(key, key.split("/")[2]), "rb")  # noqa: SIM115
            f = opened[key]
            f.seek(offset)
            yield f.read(length)
    finally:
        for f in opened.values():
            f.close()
