"""Serving: Photon services with adaptive batching, load shedding, metrics and auth, over HTTP."""

from lepton_ai.serve.app import ServeSettings, Service, build_app
from lepton_ai.serve.photon import Handler, Photon, handler

__all__ = ["Handler", "Photon", "ServeSettings", "Service", "build_app", "handler"]
