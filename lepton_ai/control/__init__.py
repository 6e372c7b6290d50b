"""The control plane: the dashboard's pages and the REST API over the registry the CLI uses."""

from lepton_ai.control.app import dashboard_app

__all__ = ["dashboard_app"]
