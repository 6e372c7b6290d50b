"""Training and evaluation of LeptonModel (and any classifier with the same attributes)."""

from lepton_ai.train.checkpoint import load_checkpoint, save_checkpoint
from lepton_ai.train.job import TrainResult, train_and_register
from lepton_ai.train.loop import evaluate, fit, resolve_device, resolve_precision

__all__ = [
    "TrainResult",
    "evaluate",
    "fit",
    "load_checkpoint",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "train_and_register",
]
