"""Lepton AI: train, compress, serve and scale models with one API and one CLI."""

from importlib.metadata import PackageNotFoundError, version as _version

from lepton_ai.errors import LeptonError

try:
    __version__ = _version("lepton-ai")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

__all__ = ["LeptonError", "__version__"]
