"""Fixtures for the serving tests."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture
def digits_ref() -> str:
    """A small cnn-small trained one epoch on digits, registered: its reference."""
    from lepton_ai import LeptonModel
    from lepton_ai.data import load

    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_pretrained_model("cnn-small")
    model.fit(load("digits", "train"), epochs=1, lr=3e-3, progress=False)
    return model.save("digits-cnn")
