"""Data sets for training and evaluation: `load(name_or_path, split=...)`."""

from lepton_ai.data.datasets import BUILTIN, LabeledData, load, split_indices

__all__ = ["BUILTIN", "LabeledData", "load", "split_indices"]
