"""Names a package exports but imports only on first use (PEP 562): importing the package stays light."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_names(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """Return a module `__getattr__` for `package` that imports each name of `homes` from the module named
    with it (relative to `package` when it starts with a dot) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(homes[name], package), name)

    return __getattr__
