from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lepton_ai import LeptonModel
from lepton_ai.data import Learner, as_inputs, batches, check_data, load
from lepton_ai.errors import InvalidInputError
from lepton_ai.train import fit


@pytest.fixture
def mlp() -> LeptonModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LeptonModel(num_classes=10, input_size=(1, 8, 8)).load_pretrained_model("mlp")


def test_a_lepton_model_is_a_learner_and_a_plain_module_is_refused(mlp: LeptonModel) -> None:
    assert isinstance(mlp, Learner) and mlp.normalizer is not None
    assert not isinstance(nn.Linear(64, 10), Learner)
    with pytest.raises(InvalidInputError, match="use a LeptonModel"):
        fit(nn.Linear(64, 10), load("digits", "train"), epochs=1, progress=False)
    with pytest.raises(InvalidInputError, match="takes tensors, not text"):
        mlp.tokenize(["a sentence"])


def test_inputs_take_one_example_or_a_batch_and_name_a_wrong_shape(mlp: LeptonModel) -> None:
    assert as_inputs(mlp, torch.zeros(1, 8, 8)).shape == (1, 1, 8, 8)
    assert as_inputs(mlp, [[[[0.0] * 8] * 8]] * 3).shape == (3, 1, 8, 8)
    with pytest.raises(InvalidInputError, match=r"\(63,\) do not fit the model's input_size \(1, 8, 8\)"):
        as_inputs(mlp, torch.zeros(2, 63))


def test_batches_follow_the_order_given(mlp: LeptonModel) -> None:
    xs = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 1, 8, 8).contiguous()
    order = torch.tensor([9, 0, 5, 3, 1])
    got = [b[:, 0, 0, 0].tolist() for b in batches(mlp, xs, 2, torch.device("cpu"), order)]
    assert got == [[9.0, 0.0], [5.0, 3.0], [1.0]]


def test_check_data_names_both_sides(mlp: LeptonModel) -> None:
    check_data(mlp, load("digits", "val"))
    with pytest.raises(InvalidInputError, match="the data has 2 classes"):
        check_data(mlp, load("breast_cancer", "val"))
    with pytest.raises(InvalidInputError, match="expected a data set"):
        check_data(mlp, torch.zeros(3))
