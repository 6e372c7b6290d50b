"""Privacy-preserving training: sample-level differential privacy (DP-SGD through Opacus) for
ordinary training, and federated learning (our simulation; Flower between processes) with optional
client-level DP. Opacus and Flower are imported only when a run needs them, and torch only when a
name below that needs it is asked for (the CLI reads `privacy.defaults` without it)."""

from lepton_ai.lazy import lazy_names
from lepton_ai.privacy.partition import partition

_LAZY = {
    "ClientDP": ".aggregation",
    "MECHANISM": ".dp",
    "DPConfig": ".dp",
    "PrivacyNotice": ".dp",
    "federated_train": ".federated",
}
__getattr__ = lazy_names(__name__, _LAZY)

__all__ = ["MECHANISM", "ClientDP", "DPConfig", "PrivacyNotice", "federated_train", "partition"]
