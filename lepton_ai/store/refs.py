"""Model references: `NAME` (the latest version) or `NAME:VERSION`."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any, NamedTuple

from lepton_ai.errors import InvalidInputError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Ref(NamedTuple):
    """A parsed model reference; `version` is None for the latest."""

    name: str
    version: int | None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def check_name(name: str, kind: str = "model") -> str:
    """Return `name` if it is a valid model (or dataset) name; raise InvalidInputError otherwise."""
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidInputError(
            f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name


def parse_ref(ref: str, kind: str = "model") -> Ref:
    """Parse `NAME`, `NAME:latest` or `NAME:VERSION` into a Ref."""
    name, sep, version = (ref or "").partition(":")
    check_name(name, kind)
    if not sep or version == "latest":
        return Ref(name, None)
    if not re.fullmatch(r"[0-9]{1,9}", version) or int(version) < 1:
        raise InvalidInputError(f"invalid version in {ref!r}: expected NAME or NAME:VERSION with VERSION ≥ 1")
    return Ref(name, int(version))


class Versioned:
    """A mixin for a dataclass of one version of something named (`name`, `version`): its reference and
    JSON-ready dict."""

    name: str
    version: int

    @property
    def ref(self) -> str:
        """Return the `NAME:VERSION` reference of this version."""
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict, its reference first (what `show --json` prints)."""
        return {"ref": self.ref, **asdict(self)}  # type: ignore[call-overload]
