from __future__ import annotations

import warnings

import pytest
import torch

from lepton_ai.data import load
from lepton_ai.train.recipe import (
    HEAD,
    LORA,
    SCRATCH,
    TRANSFORMER,
    TrainingNotice,
    recipe_for,
    say_if_it_learned_nothing,
)
from lepton_ai.train.trainer import scheduler


def test_each_family_has_its_recipe_and_what_the_user_gives_wins() -> None:
    fine_tune = recipe_for("transformer")
    assert fine_tune == TRANSFORMER and 2e-5 <= fine_tune.lr <= 1e-4 and fine_tune.schedule == "linear"
    assert fine_tune.max_grad_norm and fine_tune.warmup > 0 and fine_tune.weight_decay > 0
    assert recipe_for("scratch") == SCRATCH and SCRATCH.lr == 3e-3
    # an adapter learns from zero at a larger rate; a head alone is a logistic regression
    assert recipe_for("lora") == LORA and LORA.lr > TRANSFORMER.lr and recipe_for("head") == HEAD
    given = recipe_for("transformer", lr=1e-3, epochs=None, batch_size=8, max_grad_norm=0)
    assert (given.lr, given.epochs, given.batch_size, given.max_grad_norm) == (1e-3, TRANSFORMER.epochs, 8, 0)


def test_the_linear_schedule_warms_up_then_decays_to_zero() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = scheduler("linear", optimizer, 1.0, total_steps=20, warmup=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # two warmup steps, then down by 1/18 a step
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0]) and lrs[-1] == pytest.approx(1 / 18)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_a_model_no_better_than_the_majority_class_is_called_out() -> None:
    val = load("breast_cancer", "val")
    p = float(torch.bincount(val.labels).max()) / len(val)
    majority_f1 = 2 * p / (1 + p) / 2
    with pytest.warns(
        TrainingNotice, match=f"no better than always answering the most common class \\({p:.3f}"
    ):
        say_if_it_learned_nothing({"val_accuracy": p, "val_f1_macro": majority_f1}, val)
    # a point or two more accuracy, but the small class still never answered
    with pytest.warns(TrainingNotice):
        say_if_it_learned_nothing({"val_accuracy": p + 0.02, "val_f1_macro": majority_f1 + 0.005}, val)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        say_if_it_learned_nothing({"val_accuracy": min(1.0, p + 0.05), "val_f1_macro": 0.8}, val)
