"""Training and evaluation of LeptonModel (and any module that is a `lepton_ai.data.Learner`).

Every name is loaded on first use (PEP 562): the CLI reads `lepton_ai.train.recipe` without importing torch,
and `train_and_register` (data → model → fit → test → registry) builds the LeptonModel that itself trains
through this package's loop, so importing the loop must not import it.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "TrainResult": "lepton_ai.train.job",
    "train_and_register": "lepton_ai.train.job",
    "evaluate": "lepton_ai.train.loop",
    "fit": "lepton_ai.train.loop",
    "load_checkpoint": "lepton_ai.train.checkpoint",
    "save_checkpoint": "lepton_ai.train.checkpoint",
    "resolve_device": "lepton_ai.device",
    "resolve_precision": "lepton_ai.device",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lepton_ai.train' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)


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
