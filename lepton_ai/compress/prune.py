"""Pruning. Structured pruning removes whole channels, units, attention heads and FFN
neurons, so the network that comes out is smaller and dense (and so faster on any kernel);
magnitude pruning only zeroes weights, which dense kernels do not run faster."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import torch
from torch import nn

from lepton_ai.errors import InvalidInputError
from lepton_ai.models.architectures import BasicBlock

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _keep(scores: torch.Tensor, amount: float) -> torch.Tensor:
    k = max(1, int(round(len(scores) * (1 - amount))))
    return scores.topk(k).indices.sort().values


def _slice_out(layer: nn.Conv2d | nn.Linear, keep: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[keep].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[keep].clone())
    if isinstance(layer, nn.Conv2d):
        layer.out_channels = len(keep)
    else:
        layer.out_features = len(keep)


def _slice_in(layer: nn.Conv2d | nn.Linear, keep: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
    if isinstance(layer, nn.Conv2d):
        layer.in_channels = len(keep)
    else:
        layer.in_features = len(keep)


def _slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    bn.weight = nn.Parameter(bn.weight.data[keep].clone())
    bn.bias = nn.Parameter(bn.bias.data[keep].clone())
    assert bn.running_mean is not None and bn.running_var is not None
    bn.running_mean = bn.running_mean[keep].clone()
    bn.running_var = bn.running_var[keep].clone()
    bn.num_features = len(keep)


def _chain(module: nn.Module) -> list[nn.Module]:
    """The layers of a plain feed-forward stack, in order (residual blocks handled apart)."""
    out: list[nn.Module] = []
    for m in module.children():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, BasicBlock)):
            out.append(m)
        elif isinstance(m, nn.Sequential):
            out.extend(_chain(m))
    return out


def _prune_pairs(layers: list[nn.Module], amount: float) -> None:
    """Prune each conv/linear's outputs together with its BN and the next layer's inputs."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        rest = layers[i + 1 :]
        nxt = next((m for m in rest if isinstance(m, (nn.Conv2d, nn.Linear, BasicBlock))), None)
        if nxt is None or isinstance(nxt, BasicBlock) or (isinstance(layer, nn.Conv2d) and layer.groups != 1):
            # the head's outputs are the classes; a residual input must keep its width
            continue
        bn = rest[0] if rest and isinstance(rest[0], nn.BatchNorm2d) else None
        scores = layer.weight.detach().abs().flatten(1).sum(1)
        if bn is not None:
            scores = scores * bn.weight.detach().abs()
        keep = _keep(scores, amount)
        _slice_out(layer, keep)
        if bn is not None:
            _slice_bn(bn, keep)
        _slice_in(nxt, keep)


def _transformer_layers(net: nn.Module) -> list[Any]:
    """The layers of a BERT-style encoder (query/key/value, output, intermediate), or [].

    Typed Any: their parts are reached by Hugging Face's attribute names, which no type declares."""
    return [m for m in net.modules() if all(hasattr(m, a) for a in ("attention", "intermediate", "output"))]


def _prune_transformer(net: nn.Module, heads: float, ffn: float) -> None:
    """Remove the weakest `heads` of each layer's attention heads and `ffn` of its FFN neurons."""
    for layer in _transformer_layers(net):
        attn, out = layer.attention.self, layer.attention.output.dense
        size = attn.attention_head_size
        n_heads = attn.query.out_features // size
        if heads and n_heads > 1:
            # a head matters as much as the weights that read its values and write its output
            v = attn.value.weight.detach().reshape(n_heads, size, -1).norm(dim=(1, 2))
            o = out.weight.detach().reshape(out.out_features, n_heads, size).norm(dim=(0, 2))
            kept = _keep(v * o, heads)
            keep = (kept[:, None] * size + torch.arange(size)).flatten()
            for proj in (attn.query, attn.key, attn.value):
                _slice_out(proj, keep)
            _slice_in(out, keep)
            attn.num_attention_heads, attn.all_head_size = len(kept), len(keep)
        if ffn:
            up, down = layer.intermediate.dense, layer.output.dense
            keep = _keep(up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0), ffn)
            _slice_out(up, keep)
            _slice_in(down, keep)


def attention_heads(model: nn.Module) -> tuple[int, int]:
    """Return (heads, heads × head size) of the first attention layer of a BERT-style encoder."""
    layers = _transformer_layers(model)
    if not layers:
        raise InvalidInputError(f"{type(model).__name__} has no BERT-style attention layers")
    attn = layers[0].attention.self
    return attn.query.out_features // attn.attention_head_size, attn.query.out_features


def prune_structured(
    model: ModuleT, amount: float = 0.5, *, heads: float | None = None, ffn: float | None = None
) -> ModuleT:
    """Return a copy of `model` with `amount` of its hidden channels/units removed (L1 ranking).

    Built-in backbones: conv channels and linear units of plain stacks, and the inner width of
    ResNet blocks (residual widths stay). BERT-style encoders: `heads` of the attention heads
    and `ffn` of the FFN neurons of every layer (both default to `amount`); the hidden size
    stays. Fine-tune or distil afterwards."""
    for what, value in (("amount", amount), ("heads", heads), ("ffn", ffn)):
        if value is not None and not (0 < value < 1 or (what != "amount" and value == 0)):
            raise InvalidInputError(f"{what} must be between 0 and 1 (the fraction removed), got {value}")
    pruned = copy.deepcopy(model)
    net = getattr(pruned, "net", pruned)
    if _transformer_layers(net):
        _prune_transformer(net, amount if heads is None else heads, amount if ffn is None else ffn)
        return pruned
    features, head = getattr(net, "features", None), getattr(net, "head", None)
    if not isinstance(features, nn.Module) or not isinstance(head, nn.Module):
        raise InvalidInputError(
            f"structured pruning supports the built-in backbones (mlp, cnn-small, resnet18) "
            f"and BERT-style encoders, not {type(net).__name__}"
        )
    layers = _chain(features) + [head]
    _prune_pairs(layers, amount)
    for block in (m for m in layers if isinstance(m, BasicBlock)):
        _prune_pairs([block.conv1, block.bn1, block.conv2], amount)
    return pruned


def prune_magnitude(model: nn.Module, amount: float = 0.5) -> nn.Module:
    """Return a copy of `model` with the smallest `amount` of each conv/linear weight set to zero.
    The tensors keep their shape: smaller once compressed, not faster with dense kernels."""
    if not 0 < amount < 1:
        raise InvalidInputError(f"amount must be between 0 and 1 (the fraction zeroed), got {amount}")
    pruned = copy.deepcopy(model)
    for m in pruned.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.data
            k = int(w.numel() * amount)
            if k:
                threshold = w.abs().flatten().kthvalue(k).values
                w[w.abs() <= threshold] = 0
    return pruned


def sparsity(model: nn.Module) -> float:
    """Return the fraction of conv/linear weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(1, total)


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameters."""
    return sum(p.numel() for p in model.parameters())


def prune(model: nn.Module, amount: float = 0.5, method: str = "structured", **options: float) -> nn.Module:
    """Return a pruned copy of `model`: `structured` (smaller and dense) or `magnitude` (zeroed)."""
    if method == "structured":
        return prune_structured(model, amount, **options)
    if method == "magnitude":
        return prune_magnitude(model, amount)
    raise InvalidInputError(f"pruning method must be structured or magnitude, not {method!r}")
