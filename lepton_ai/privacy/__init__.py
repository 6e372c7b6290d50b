"""Privacy-preserving training: sample-level differential privacy (DP-SGD through Opacus) for
ordinary training, and federated learning (our simulation; Flower between processes) with optional
client-level DP. Opacus and Flower are imported only when a run needs them, and torch only when a
name below that needs it is asked for (the CLI reads `privacy.defaults` without it)."""

import os
import sys
from typing import Any

from lepton_ai.lazy import lazy_names
from lepton_ai.privacy.partition import partition

# Flower reports each server start, client start and task to telemetry.flower.ai unless told not to, and
# waits for the report as a task ends: a federation talks to its own machines only. Set before any module
# here imports Flower (it reads the setting once); a user's explicit FLWR_TELEMETRY_ENABLED=1 stands.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
if "flwr.supercore.telemetry" in sys.modules:
    # Flower imported first, by the user's own code
    telemetry: Any = sys.modules["flwr.supercore.telemetry"]
    telemetry.FLWR_TELEMETRY_ENABLED = os.environ["FLWR_TELEMETRY_ENABLED"]

_LAZY = {
    "ClientDP": ".aggregation",
    "MECHANISM": ".dp",
    "DPConfig": ".dp",
    "PrivacyNotice": ".dp",
    "federated_train": ".federated",
}
__getattr__ = lazy_names(__name__, _LAZY)

__all__ = ["MECHANISM", "ClientDP", "DPConfig", "PrivacyNotice", "federated_train", "partition"]
