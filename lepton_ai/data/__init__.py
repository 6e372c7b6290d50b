"""Data sets (`load(name_or_path, split=...)`) and how their examples reach a model."""

from lepton_ai.data.datasets import BUILTIN, LabeledData, load, split_indices
from lepton_ai.data.inputs import Learner, Tokens, as_inputs, batches, check_data, length_grouped, take

__all__ = [
    "BUILTIN",
    "LabeledData",
    "Learner",
    "Tokens",
    "as_inputs",
    "batches",
    "check_data",
    "length_grouped",
    "load",
    "split_indices",
    "take",
]
