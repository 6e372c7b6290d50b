"""Data sets (`load(name_or_path, split=...)`) and how their examples reach a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton_ai.lazy import lazy_names

if TYPE_CHECKING:
    from lepton_ai.data.datasets import BUILTIN, LabeledData, load, split_indices
    from lepton_ai.data.inputs import Learner, Tokens, as_inputs, batches, check_data, length_grouped, take

# where each public name lives: loaded on first use, so that a module of this package that needs no torch
# (reading a folder's files in a worker process) does not import it
_HOMES = {
    "BUILTIN": ".datasets",
    "LabeledData": ".datasets",
    "load": ".datasets",
    "split_indices": ".datasets",
    "Learner": ".inputs",
    "Tokens": ".inputs",
    "as_inputs": ".inputs",
    "batches": ".inputs",
    "check_data": ".inputs",
    "length_grouped": ".inputs",
    "take": ".inputs",
}
__getattr__ = lazy_names(__name__, _HOMES)

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
