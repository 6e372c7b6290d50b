"""Attributions on models whose true attribution is known (a linear model: Integrated Gradients is weight ×
(input − baseline)), and on a trained digits CNN: faithful, model-reading, drawn."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError
from lepton_ai.explain import METHODS, explain, faithfulness
from lepton_ai.explain.pictures import feature_bars, image_overlay
from lepton_ai.models import LeptonModel


@pytest.fixture(scope="module")
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(5, 3)


@pytest.mark.parametrize("method", ["integrated_gradients", "feature_ablation", "occlusion", "gradient_shap"])
def test_a_linear_models_attribution_is_weight_times_input_less_baseline(
    linear: nn.Linear, method: str
) -> None:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    base = torch.full((5,), 0.5)
    got = explain(linear, x, method, target=2, baseline=base, steps=64)
    expected = linear.weight[2].detach() * (x - base)
    # GradientShap averages over baselines drawn around the given one: equal in expectation
    tolerance = 0.1 if method == "gradient_shap" else 1e-4
    assert torch.allclose(got.attributions, expected, atol=tolerance), method
    assert got.targets.tolist() == [2, 2, 2, 2]


def test_saliency_of_a_linear_model_is_its_weight(linear: nn.Linear) -> None:
    x = torch.randn(3, 5)
    got = explain(linear, x, "saliency", target=1)
    assert torch.allclose(got.attributions, linear.weight[1].detach().expand(3, 5))


def test_the_predicted_class_is_explained_unless_told(linear: nn.Linear) -> None:
    x = torch.randn(6, 5)
    assert explain(linear, x, "ig").targets.tolist() == linear(x).argmax(-1).tolist()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"method": "lime"}, "unknown method"),
        ({"target": 3}, "outside the model's 3 classes"),
        ({"steps": 10_000}, "steps must be in"),
        ({"baseline": torch.zeros(7)}, "does not fit"),
    ],
)
def test_bad_requests_are_named(linear: nn.Linear, kwargs: dict, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        explain(linear, torch.randn(2, 5), **kwargs)


@pytest.fixture(scope="module")
def digits_cnn() -> tuple[LeptonModel, torch.Tensor]:
    train, val, test = (load("digits", s) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_pretrained_model("cnn-small")
    model.fit(train, val, epochs=8, progress=False)
    return model.eval(), test.features[:24]


def test_integrated_gradients_on_digits_are_faithful_and_read_the_model(digits_cnn) -> None:
    model, x = digits_cnn
    ig = explain(model, x, "ig", steps=32)
    assert ig.attributions.shape == x.shape
    scores = faithfulness(model, x, ig)
    # removing the most attributed pixels first costs the class far faster than removing pixels at random
    assert scores.deletion_ratio < 0.8, scores
    # the same method on the same model with random weights attributes otherwise
    assert scores.randomised_correlation < 0.3, scores
    assert scores.infidelity >= 0


def test_every_method_explains_digits_and_draws_them(digits_cnn) -> None:
    model, x = digits_cnn
    for method in METHODS:
        got = explain(model, x[:2], method, steps=8)
        assert got.attributions.shape == x[:2].shape and torch.isfinite(got.attributions).all(), method
    png = image_overlay(x[0], got.attributions[0], "digit")
    assert png.startswith(b"\x89PNG")
    bars = feature_bars(torch.randn(30), [f"f{i}" for i in range(30)], top=5)
    assert bars.startswith(b"\x89PNG")


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "occlusion"])
def test_passes_of_a_few_rows_explain_as_one_pass_does(digits_cnn, method: str) -> None:
    model, x = digits_cnn
    whole = explain(model, x, method, steps=16, batch_size=len(x) * 16)
    # 24 images in chunks of 5 (IG: 5 points of the path a pass)
    split = explain(model, x, method, steps=16, batch_size=5)
    assert torch.allclose(split.attributions, whole.attributions, atol=1e-5)
    assert split.targets.tolist() == whole.targets.tolist()
