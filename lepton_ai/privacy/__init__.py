"""Privacy-preserving training: sample-level differential privacy (DP-SGD through Opacus) for
ordinary training, and federated learning (our simulation; Flower between processes) with optional
client-level DP. Opacus and Flower are imported only when a run needs them."""

from lepton_ai.privacy.aggregation import ClientDP
from lepton_ai.privacy.dp import MECHANISM, DPConfig, PrivacyNotice
from lepton_ai.privacy.federated import federated_train
from lepton_ai.privacy.partition import partition

__all__ = ["MECHANISM", "ClientDP", "DPConfig", "PrivacyNotice", "federated_train", "partition"]
