"""What a frozen encoder makes of a data set: the features a head alone trains on (`--head-only`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import Tokens, as_inputs

if TYPE_CHECKING:
    from lepton_ai.models.lepton_model import LeptonModel


def text_features(model: LeptonModel, data: LabeledData, device: torch.device | str) -> torch.Tensor:
    """Return a text encoder's pooled embedding of each example, batched by length."""
    net = model._text_net()
    tokens = as_inputs(model, data)
    assert isinstance(tokens, Tokens)
    # like lengths together: little padding
    order = torch.argsort(tokens.lengths, descending=True)
    out = torch.empty(len(data), net.encoder.config.hidden_size)
    for idx in order.split(64):
        out[idx] = net.embed(tokens.batch(idx, device)).float().cpu()
    return out


def backbone_features(model: LeptonModel, data: LabeledData, device: torch.device | str) -> torch.Tensor:
    """Return a built-in backbone's features of each example (what its head reads)."""
    net = model.net
    assert net is not None
    inputs = as_inputs(model, data)
    assert isinstance(inputs, torch.Tensor)
    encoder = nn.Sequential(cast(nn.Module, net.normalize), cast(nn.Module, net.features))
    return torch.cat([encoder(x.to(device)).float().cpu() for x in inputs.split(256)])
