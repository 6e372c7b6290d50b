"""How saved weights meet a model: loading them, the metadata a .safetensors file carries, the layers a saved
model replaced, and the layer widths a pruned model stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model
from torch import nn

from lepton_ai.errors import InvalidInputError


def load_weights(net: nn.Module, weights: str | Path, file_name: str, arch: str) -> None:
    """Load `weights` (a .safetensors file, a saved model's directory or a registry reference) into `net`,
    resized to the widths they store; raise naming what does not fit."""
    from lepton_ai.store import local_path

    path = local_path(weights)
    if path.is_dir():
        path = path / file_name
    resize_to(net, path)
    missing, unexpected = load_model(net, str(path), strict=False)
    if missing or unexpected:
        raise InvalidInputError(
            f"{path} does not fit {arch}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def is_backbone(meta: dict[str, Any]) -> bool:
    """Return whether saved metadata is a built-in backbone's, with no head (pretrained without labels)."""
    from lepton_ai.models.architectures import ARCHITECTURES

    return meta["num_classes"] == 0 and meta.get("arch") in ARCHITECTURES


def read_meta(path: Path) -> dict[str, Any] | None:
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("lepton")
    return json.loads(raw) if raw else None


def replace_modules(net: nn.Module, specs: dict[str, dict[str, Any]]) -> None:
    """Swap in the layers a saved model was trained with in place of the architecture's (GroupNorm where
    DP-SGD replaced BatchNorm), so that its weights load."""
    for name, spec in specs.items():
        if spec.get("type") != "GroupNorm":
            raise InvalidInputError(
                f"the saved model replaced {name} with a {spec.get('type')}, which this version "
                "of lepton-ai cannot rebuild"
            )
        parent, _, child = name.rpartition(".")
        setattr(
            net.get_submodule(parent),
            child,
            nn.GroupNorm(spec["num_groups"], spec["num_channels"], affine=spec.get("affine", True)),
        )


def resize_to(net: nn.Module, path: Path) -> None:
    """Give conv, linear and batch-norm layers the widths stored in `path`: a pruned model is
    the same architecture with fewer channels, and loads through the same code."""
    with safe_open(str(path), framework="pt") as f:
        # safe_open is not iterable: keys() is the only way to list its tensors
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    for name, m in net.named_modules():
        shape = shapes.get(f"{name}.weight" if name else "weight")
        if (
            shape is None
            or not isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
            or tuple(m.weight.shape) == shape
        ):
            continue
        if isinstance(m, nn.Conv2d):
            m.out_channels, m.in_channels = shape[0], shape[1] * m.groups
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = shape
        else:
            m.num_features = shape[0]
            m.running_mean, m.running_var = torch.zeros(shape[0]), torch.ones(shape[0])
        m.weight = nn.Parameter(torch.empty(shape))
        if m.bias is not None:
            m.bias = nn.Parameter(torch.empty(shape[0]))
