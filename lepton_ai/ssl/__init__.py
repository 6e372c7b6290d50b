"""Self-supervised pretraining: a backbone learns from unlabelled images or tables (SimCLR's NT-Xent or
VICReg, on random views of each example), so that a few labels are enough afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton_ai.lazy import lazy_names

if TYPE_CHECKING:
    from lepton_ai.ssl.losses import NTXentLoss, VICRegLoss
    from lepton_ai.ssl.pretraining import METHODS, pretrain

__getattr__ = lazy_names(
    __name__,
    {"NTXentLoss": ".losses", "VICRegLoss": ".losses", "METHODS": ".pretraining", "pretrain": ".pretraining"},
)

__all__ = ["METHODS", "NTXentLoss", "VICRegLoss", "pretrain"]
