from __future__ import annotations

import warnings

import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.data import load


def train_digits(arch: str, epochs: int) -> LeptonModel:
    """Return `arch` trained on digits from a fixed seed."""
    torch.manual_seed(0)
    m = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.load_pretrained_model(arch)
    m.fit(load("digits", "train"), epochs=epochs, progress=False)
    return m


@pytest.fixture(scope="module")
def digits_model() -> LeptonModel:
    return train_digits("cnn-small", 4)


@pytest.fixture(scope="module")
def trained() -> LeptonModel:
    return train_digits("mlp", 6)
