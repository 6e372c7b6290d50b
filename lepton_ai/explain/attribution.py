"""Attributions through Captum: how much each input feature (pixel, column) moved the model's score for a
class (Integrated Gradients, Saliency, Occlusion, GradientShap, feature ablation), shaped like the inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lepton_ai.errors import InvalidInputError
from lepton_ai.explain.methods import check_steps, check_targets, method_name

# Input values one forward pass of a path method takes (its rows: examples × steps). Small enough that the
# activations stay in a core's cache and are not mapped and unmapped each pass: in a fresh process (a model
# process is one) the whole path at once was slower (benchmarks/RESULTS.md).
PASS_VALUES = 8192


@dataclass(frozen=True)
class Explanation:
    """Attributions shaped like the inputs (N, *input_size), the class each explains, and how."""

    attributions: torch.Tensor
    targets: torch.Tensor
    method: str
    options: dict[str, Any]


def explain(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    method: str = "integrated_gradients",
    target: int | torch.Tensor | None = None,
    baseline: torch.Tensor | float | None = None,
    steps: int = 32,
    window: int = 2,
    batch_size: int | None = None,
) -> Explanation:
    """Return the attributions of `model`'s logit for `target` (each input's predicted class if None) to each
    input feature, by `method`, against `baseline` (zeros if None: a blank image, a row of zeros), in forward
    passes of `batch_size` rows (PASS_VALUES input values if None)."""
    name = method_name(method)
    check_steps(steps)
    if isinstance(model, nn.Module):
        model.eval()
    inputs = inputs.float()
    targets = _targets(model, inputs, target)
    base = _baseline(inputs, baseline)
    rows = batch_size or max(1, PASS_VALUES // max(1, inputs[0].numel()))
    # GradientShap passes all its samples of an example at once; IG splits its steps into passes of `rows`
    chunk = max(1, rows // steps) if name == "gradient_shap" else rows
    attributions = torch.cat(
        [
            _attribute(model, name, x, t, b, steps, window, rows)
            for x, t, b in zip(inputs.split(chunk), targets.split(chunk), base.split(chunk))
        ]
    )
    return Explanation(attributions.detach(), targets, name, {"steps": steps, "window": window})


def _targets(
    model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, target: int | torch.Tensor | None
) -> torch.Tensor:
    """Return the class each input's attribution explains, checked against the model's classes."""
    with torch.no_grad():
        if target is None:
            return torch.cat([model(x).argmax(-1) for x in inputs.split(256)])
        classes = model(inputs[:1]).shape[-1]
    out = torch.as_tensor(target, dtype=torch.long).expand(len(inputs)).clone()
    check_targets(out.unique().tolist(), classes)
    return out


def _baseline(inputs: torch.Tensor, baseline: torch.Tensor | float | None) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(inputs)
    base = torch.as_tensor(baseline, dtype=inputs.dtype)
    if base.dim() and base.shape != inputs.shape[1:] and base.shape != inputs.shape:
        raise InvalidInputError(
            f"a baseline of shape {list(base.shape)} does not fit inputs of {list(inputs.shape[1:])}"
        )
    return base.expand_as(inputs).clone()


def _attribute(
    model: Callable[[torch.Tensor], torch.Tensor],
    name: str,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor,
    steps: int,
    window: int,
    rows: int,
) -> torch.Tensor:
    """Return one batch's attributions by the Captum method `name`, `rows` points of the path a pass."""
    import captum.attr as ca

    if name == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(
            x, baseline, target=target, n_steps=steps, internal_batch_size=max(rows, len(x))
        )
    if name == "saliency":
        return ca.Saliency(model).attribute(x.requires_grad_(), target=target, abs=False)
    if name == "gradient_shap":
        # baselines around the given one: GradientShap averages over them
        generator = torch.Generator().manual_seed(0)
        around = baseline[:1] + 0.1 * torch.randn((steps, *x.shape[1:]), generator=generator)
        return ca.GradientShap(model).attribute(x, around, target=target, n_samples=steps)
    if name == "occlusion" and x.dim() == 4:
        shape = (x.shape[1], min(window, x.shape[2]), min(window, x.shape[3]))
        return ca.Occlusion(model).attribute(x, shape, strides=shape, baselines=baseline, target=target)
    # tables (and occlusion of a table, one feature at a time)
    return ca.FeatureAblation(model).attribute(x, baseline, target=target)
