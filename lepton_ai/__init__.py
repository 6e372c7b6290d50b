"""Lepton AI: train, compress, serve and scale models with one API and one CLI."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from lepton_ai.errors import LeptonError

try:
    __version__ = _version("lepton-ai")
# running from a source tree that was not installed
except PackageNotFoundError:
    __version__ = "0.0.0+local"


# keep `import lepton_ai` light: torch loads only when a model is asked for
def __getattr__(name: str):
    if name == "LeptonModel":
        from lepton_ai.models import LeptonModel

        return LeptonModel
    if name in ("Photon", "handler"):
        from lepton_ai import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'lepton_ai' has no attribute {name!r}")


__all__ = ["LeptonError", "LeptonModel", "Photon", "__version__", "handler"]
