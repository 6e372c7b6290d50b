"""The control plane: the REST API (and, to come, the dashboard's pages) over the registry the CLI uses."""

from lepton_ai.control.api import api_app

__all__ = ["api_app"]
