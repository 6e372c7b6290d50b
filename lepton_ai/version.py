"""The installed version of lepton-ai."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lepton-ai")
except PackageNotFoundError:
    # running from a source tree that was not installed
    __version__ = "0.0.0+local"
