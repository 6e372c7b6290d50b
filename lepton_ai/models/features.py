"""What a frozen encoder makes of a data set: the features a head alone trains on (`--head-only`)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from lepton_ai.data.inputs import Tokens
from lepton_ai.models.text import TextClassifier


def encoder_features(
    net: nn.Module, inputs: Tokens | torch.Tensor, device: torch.device | str
) -> torch.Tensor:
    """Return a frozen encoder's features of each example: a text encoder's pooled embedding, or a built-in
    backbone's (what its head reads)."""
    if isinstance(inputs, Tokens):
        assert isinstance(net, TextClassifier)
        return text_features(net, inputs, device)
    return backbone_features(net, inputs, device)


def text_features(net: TextClassifier, tokens: Tokens, device: torch.device | str) -> torch.Tensor:
    """Return a text encoder's pooled embedding of each example, batched by length."""
    # like lengths together: little padding
    order = torch.argsort(tokens.lengths, descending=True)
    out = torch.empty(len(tokens.lengths), net.encoder.config.hidden_size)
    for idx in order.split(64):
        out[idx] = net.embed(tokens.batch(idx, device)).float().cpu()
    return out


def backbone_features(net: nn.Module, inputs: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Return a built-in backbone's features of each example (what its head reads)."""
    encoder = nn.Sequential(cast(nn.Module, net.normalize), cast(nn.Module, net.features))
    return torch.cat([encoder(x.to(device)).float().cpu() for x in inputs.split(256)])
