"""Training and evaluation of LeptonModel (and any module that is a `lepton_ai.data.Learner`).

`train_and_register` (data → model → fit → test → registry) is loaded on first use: it builds a LeptonModel,
and `lepton_ai.models` itself trains through this package's loop, so importing the loop must not import it.
"""

from typing import Any

from lepton_ai.device import resolve_device, resolve_precision
from lepton_ai.train.checkpoint import load_checkpoint, save_checkpoint
from lepton_ai.train.loop import evaluate, fit

_JOB = ("TrainResult", "train_and_register")


def __getattr__(name: str) -> Any:
    if name in _JOB:
        from lepton_ai.train import job

        return getattr(job, name)
    raise AttributeError(f"module 'lepton_ai.train' has no attribute {name!r}")


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
