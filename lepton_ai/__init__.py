"""Lepton AI: train, compress, serve and scale models with one API and one CLI."""

from typing import Any

from lepton_ai.errors import LeptonError
from lepton_ai.version import __version__


# keep `import lepton_ai` light: torch loads only when a model is asked for
def __getattr__(name: str) -> Any:
    if name == "LeptonModel":
        from lepton_ai.models import LeptonModel

        return LeptonModel
    if name in ("Photon", "handler"):
        from lepton_ai import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'lepton_ai' has no attribute {name!r}")


__all__ = ["LeptonError", "LeptonModel", "Photon", "__version__", "handler"]
