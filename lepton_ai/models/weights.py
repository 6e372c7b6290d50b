"""How saved weights meet a model: loading them (int8-stored ones too), the metadata a .safetensors file
carries, the layers a saved model replaced, and the layer widths a pruned model stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file
from torch import nn

from lepton_ai.errors import InvalidInputError

# an int8-stored weight W is saved as W.int8 and W.scale (fp32, one per row): W ≈ W.int8 × W.scale
INT8, SCALE = ".int8", ".scale"


def load_weights(net: nn.Module, weights: str | Path, file_name: str, arch: str) -> None:
    """Load `weights` (a .safetensors file, a saved model's directory or a registry reference) into `net`,
    resized to the widths they store; raise naming what does not fit."""
    from lepton_ai.store import local_path

    path = local_path(weights)
    if path.is_dir():
        path = path / file_name
    resize_to(net, path)
    if is_int8_stored(path):
        missing, unexpected = net.load_state_dict(unpack_int8(load_file(str(path))), strict=False)
    else:
        missing, unexpected = load_model(net, str(path), strict=False)
    if missing or unexpected:
        raise InvalidInputError(
            f"{path} does not fit {arch}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def pack_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return `state` with each float weight matrix or kernel (linear, embedding, conv) stored as int8, one
    fp32 scale per output row (symmetric): a quarter of the bytes, within half a step of each weight. Buffers
    stay as they are: an input's mean and spread need every digit."""
    packed = {}
    for name, w in state.items():
        if not name.endswith("weight") or not w.is_floating_point() or w.dim() < 2:
            packed[name] = w
            continue
        packed[name + INT8], packed[name + SCALE] = int8_rows(w)
    return packed


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `w` as int8 with one fp32 scale per row (the first dimension), symmetric: each weight within
    half a step of its value."""
    scale = w.float().abs().flatten(1).amax(1).clamp_min(1e-12) / 127
    q = (w.float() / scale.view(-1, *[1] * (w.dim() - 1))).round().clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def unpack_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return `state` with its int8-stored weights (see `pack_int8`) back in fp32."""
    bases = [name.removesuffix(INT8) for name in state if name.endswith(INT8)]
    packed = {base for base in bases if base + SCALE in state}
    stored = {base + suffix for base in packed for suffix in (INT8, SCALE)}
    out = {name: w for name, w in state.items() if name not in stored}
    for base in packed:
        q, scale = state[base + INT8], state[base + SCALE]
        out[base] = q.float() * scale.view(-1, *[1] * (q.dim() - 1))
    return out


def store_int8(path: Path) -> None:
    """Rewrite the .safetensors file `path` with its weights stored in int8 (`pack_int8`), atomically."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tmp = path.with_name(f".{path.name}.int8")
    save_file(pack_int8(load_file(str(path))), str(tmp), metadata=metadata)
    tmp.replace(path)


def is_int8_stored(path: Path) -> bool:
    """Return whether the .safetensors file `path` holds int8-stored weights."""
    with safe_open(str(path), framework="pt") as f:
        return any(k.endswith(INT8) for k in f.keys())  # noqa: SIM118


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
        shapes = {k.removesuffix(INT8): tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
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
