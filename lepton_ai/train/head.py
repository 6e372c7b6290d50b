"""Training a classification head alone on features a frozen encoder computed once: seconds where
fine-tuning the whole encoder takes minutes, and what a practitioner tries first."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import Tokens
from lepton_ai.errors import InvalidInputError
from lepton_ai.train.loop import fit
from lepton_ai.train.recipe import HEAD

# optimizer steps a head takes at least when the epochs are not given
MIN_STEPS = 1000


class Head(nn.Module):
    """A linear head over precomputed features, trained as a model of its own (its weights are the head's)."""

    family = "head"
    is_text = False
    normalizer = None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.num_classes = linear.out_features
        self.input_size: tuple[int, ...] = (linear.in_features,)
        self.preprocess: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def tokenize(self, texts: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        raise InvalidInputError("a head reads features, not text")

    def encode(self, texts: Sequence[str]) -> Tokens:
        raise InvalidInputError("a head reads features, not text")


def fit_head(
    head: nn.Linear, train_features: LabeledData, val_features: LabeledData | None, **options: Any
) -> dict[str, Any]:
    """Train `head` in place on `train_features` (the encoder's, one row per example) with the head's recipe
    (`lepton_ai.train.recipe.HEAD`) and `fit`'s options; return the history."""
    for name in ("max_length", "compile"):
        if options.get(name):
            raise InvalidInputError(f"{name} is for training an encoder, not a head on its features")
    if options.get("epochs") is None:
        # a logistic regression needs its steps however few the examples: 60 labels are 2 batches an epoch
        steps = math.ceil(len(train_features) / (options.get("batch_size") or HEAD.batch_size))
        options["epochs"] = max(HEAD.epochs, math.ceil(MIN_STEPS / steps))
    history: dict[str, Any] = fit(Head(head), train_features, val_features, **options)
    return history
