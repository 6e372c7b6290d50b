"""How the control plane lists: pages of at most `limit` items with an opaque cursor to the next one, and
metric series thinned on the server so a chart gets its shape, not every point."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

from fastapi import Path

from lepton_ai.errors import InvalidInputError

MAX_LIMIT = 500
# a row number as the database can hold it (a larger one would be a server error, not a 404)
MAX_ID = 2**63 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


class Listed(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=Listed)


@dataclass(frozen=True)
class Page(Generic[T]):
    """Some items of a list and the cursor that asks for the items after them (None: the list ended)."""

    items: list[T]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the page as JSON-ready values: each item as the CLI's `--json` prints it."""
        return {"items": [i.to_dict() for i in self.items], "next_cursor": self.next_cursor}


def page(
    fetch: Callable[[Any, int], list[T]],
    key: Callable[[T], Any],
    limit: int,
    cursor: str | None,
    kind: type = int,
) -> Page[T]:
    """Return a page of `fetch(after, limit)` (one more is read to know whether the list goes on); the list's
    keys are of `kind` (a number, or a name)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    items = fetch(_read_cursor(cursor, kind), limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return Page(items, _cursor(key(items[-1])) if more else None)


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _read_cursor(cursor: str | None, kind: type) -> Any:
    if cursor is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as e:
        raise InvalidInputError(f"cursor {cursor[:40]!r} is not one this API gave: start without it") from e
    # another list's cursor (a name where a number goes), or a number past a row id, would reach the
    # database: PostgreSQL refuses it
    wrong = not isinstance(value, kind) or isinstance(value, bool)
    if wrong or (isinstance(value, int) and not 0 <= value <= MAX_ID):
        raise InvalidInputError(f"cursor {cursor[:40]!r} is not one this API gave: start without it")
    return value


def thin(series: Sequence[tuple[int, float]], points: int) -> list[tuple[int, float]]:
    """Return at most `points` of `series`: each of points / 2 buckets' lowest and highest point (in step
    order), so spikes and dips survive where every n-th point would drop them."""
    if points < 2:
        raise InvalidInputError(f"points must be at least 2, not {points}")
    if len(series) <= points:
        return list(series)
    buckets, out = points // 2, []
    for b in range(buckets):
        chunk = series[b * len(series) // buckets : (b + 1) * len(series) // buckets]
        low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        out += sorted({low, high})
    return out
