"""Training and evaluation of LeptonModel (and any module that is a `lepton_ai.data.Learner`).

Every name is loaded on first use (PEP 562): the CLI reads `lepton_ai.train.recipe` without importing torch,
and `train_and_register` (data → model → fit → test → registry) builds the LeptonModel that itself trains
through this package's loop, so importing the loop must not import it.
"""

from lepton_ai.lazy import lazy_names

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
__getattr__ = lazy_names(__name__, _LAZY)

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
