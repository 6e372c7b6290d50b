from __future__ import annotations

import warnings

import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.compress import count_parameters, prune_magnitude, prune_structured, sparsity
from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError


def _model(arch: str) -> LeptonModel:
    torch.manual_seed(0)
    m = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return m.load_pretrained_model(arch)


@pytest.mark.parametrize("arch, max_ratio", [("cnn-small", 0.3), ("mlp", 0.4), ("resnet18", 0.55)])
def test_structured_pruning_physically_shrinks_the_network(arch: str, max_ratio: float) -> None:
    model = _model(arch).eval()
    pruned = prune_structured(model, 0.5).eval()
    assert count_parameters(pruned) < max_ratio * count_parameters(model)
    assert pruned(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    # the original is untouched
    assert count_parameters(model) == count_parameters(_model(arch))
    # smaller and dense, not zeroed
    assert sparsity(pruned) < 0.01


def test_pruned_model_recovers_with_fine_tuning() -> None:
    train, test = load("digits", "train"), load("digits", "test")
    model = _model("cnn-small")
    model.fit(train, epochs=5, progress=False)
    pruned = prune_structured(model, 0.5)
    pruned.fit(train, epochs=4, lr=2e-3, progress=False)
    assert pruned.evaluate(test)["accuracy"] >= model.evaluate(test)["accuracy"] - 0.03
    # saves and reloads at its new width
    ref = pruned.save("pruned")
    same = LeptonModel.load(ref)
    assert count_parameters(same) == count_parameters(pruned)
    assert torch.equal(same.predict(test), pruned.predict(test))


def test_magnitude_pruning_zeroes_but_keeps_shapes() -> None:
    model = _model("mlp")
    pruned = prune_magnitude(model, 0.6)
    assert sparsity(pruned) == pytest.approx(0.6, abs=0.01)
    assert count_parameters(pruned) == count_parameters(model)


def test_bad_amounts_and_models() -> None:
    with pytest.raises(InvalidInputError, match="between 0 and 1"):
        prune_structured(_model("mlp"), 1.0)
    with pytest.raises(InvalidInputError, match="built-in backbones"):
        prune_structured(torch.nn.Linear(3, 2), 0.5)


def test_transformer_heads_and_ffn_neurons_are_removed_and_reload(tiny_bert, tmp_path) -> None:
    from lepton_ai.compress import prune
    from lepton_ai.compress.prune import attention_heads
    from tests.compress.conftest import embedder

    model = embedder(tiny_bert)
    pruned = prune(model, heads=0.5, ffn=0.5).eval()
    layer = pruned.net.encoder.encoder.layer[0]
    assert attention_heads(pruned) == (2, 32) and attention_heads(model) == (4, 64)
    assert layer.intermediate.dense.out_features == 64 and layer.output.dense.in_features == 64
    assert layer.attention.output.dense.in_features == 32
    assert count_parameters(pruned) < count_parameters(model)
    sentences = ["a short sentence", "another one, a little longer than the first"]
    out = pruned.embed(sentences)
    assert out.shape == (2, 64) and torch.allclose(out.norm(dim=1), torch.ones(2))
    # reloads at the pruned widths
    same = LeptonModel.load(pruned.save_dir(tmp_path / "pruned"))
    assert torch.allclose(same.embed(sentences), out, atol=1e-6)
    with pytest.raises(InvalidInputError, match="pruning method"):
        prune(model, 0.5, method="random")
    with pytest.raises(InvalidInputError, match="heads must be between"):
        prune(model, heads=1.0)
