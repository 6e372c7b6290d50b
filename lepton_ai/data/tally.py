"""What reading a source found: the records kept, and those left out with why (quarantined, or an exact copy
of one kept)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lepton_ai.errors import InvalidInputError

# records a version's stats list by name, of those quarantined and of the duplicates (the counts are whole)
LISTED = 1000


@dataclass
class Tally:
    """The records an add left out (quarantined ones with why, exact duplicates of a record kept) and those it
    kept that look alike (near duplicates)."""

    quarantined: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    near: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def quarantine(self, where: str | int, reason: str) -> None:
        """Leave out the record at `where` (a path, or a table's row), for `reason`."""
        self.counts["quarantined"] += 1
        if len(self.quarantined) < LISTED:
            self.quarantined.append({"record": where, "reason": reason})

    def duplicate(self, where: str | int, of: str | int) -> None:
        """Leave out the record at `where`, an exact copy of `of`."""
        self.counts["duplicates"] += 1
        if len(self.duplicates) < LISTED:
            self.duplicates.append({"record": where, "of": of})

    def near_duplicate(self, where: str, of: str) -> None:
        """Note that the record at `where` looks like `of` (both kept: one split holds them)."""
        self.counts["near_duplicates"] += 1
        if len(self.near) < LISTED:
            self.near.append({"record": where, "of": of})

    def check_strict(self, strict: bool) -> None:
        """Under --strict, refuse the add if anything was quarantined, naming the first few."""
        if strict and self.quarantined:
            first = "; ".join(f"{q['record']}: {q['reason']}" for q in self.quarantined[:3])
            raise InvalidInputError(
                f"{self.counts['quarantined']} records failed their checks ({first}): nothing was registered "
                "(without --strict they are left out and listed)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the counts and the records listed, for a version's stats."""
        return {
            "quarantined": self.counts["quarantined"],
            "duplicates": self.counts["duplicates"],
            "quarantine": self.quarantined,
            "duplicate_records": self.duplicates,
            "near_duplicates": self.counts["near_duplicates"],
            "near_duplicate_records": self.near,
        }


@dataclass(frozen=True)
class Found:
    """What a source held, before splits: the records' manifest rows, the schema, what was left out, and the
    bytes this add stored that no earlier version had."""

    frame: pd.DataFrame
    schema: dict[str, Any]
    tally: Tally
    stored_bytes: int
