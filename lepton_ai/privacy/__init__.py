"""Privacy-preserving training: sample-level differential privacy (DP-SGD through Opacus) for
ordinary training, and federated learning (our simulation; Flower between processes) with optional
client-level DP. Opacus and Flower are imported only when a run needs them, and torch only when a
name below that needs it is asked for (the CLI reads `privacy.defaults` without it)."""

from importlib import import_module
from typing import Any

from lepton_ai.privacy.partition import partition

_LAZY = {
    "ClientDP": "aggregation",
    "MECHANISM": "dp",
    "DPConfig": "dp",
    "PrivacyNotice": "dp",
    "federated_train": "federated",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lepton_ai.privacy' has no attribute {name!r}")
    return getattr(import_module(f"lepton_ai.privacy.{_LAZY[name]}"), name)


__all__ = ["MECHANISM", "ClientDP", "DPConfig", "PrivacyNotice", "federated_train", "partition"]
