"""Whether an explanation reads the model: a deletion score (the explained class's probability as the most
attributed features are removed first, against a random order), Captum's infidelity, and the sanity check of
Adebayo et al. 2018 (a method that reads the model gives other attributions once its weights are random)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lepton_ai.explain.attribution import Explanation, explain

# removal steps of the deletion curve
_STEPS = 20


@dataclass(frozen=True)
class Faithfulness:
    """An explanation's faithfulness: the deletion curve's area in the attributions' order and in a random one
    (their ratio: below 1, the attributions found what the model uses), Captum's infidelity, and the rank
    correlation with the attributions of the same model with random weights (low: the method reads the
    model)."""

    deletion_auc: float
    random_auc: float
    deletion_ratio: float
    infidelity: float
    randomised_correlation: float
    # the same on magnitudes: high for input × gradient methods on sparse inputs, as the paper found
    randomised_correlation_abs: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def faithfulness(
    model: nn.Module, inputs: torch.Tensor, explanation: Explanation, baseline: float = 0.0
) -> Faithfulness:
    """Return how faithful `explanation` (of `model` on `inputs`) is."""
    deletion, random = deletion_auc(model, inputs, explanation, baseline)
    signed, magnitudes = randomised_correlation(model, inputs, explanation)
    return Faithfulness(
        deletion_auc=deletion,
        random_auc=random,
        deletion_ratio=deletion / max(random, 1e-12),
        infidelity=_infidelity(model, inputs, explanation),
        randomised_correlation=signed,
        randomised_correlation_abs=magnitudes,
    )


@torch.no_grad()
def deletion_auc(
    model: nn.Module, inputs: torch.Tensor, explanation: Explanation, baseline: float = 0.0
) -> tuple[float, float]:
    """Return the mean area under the explained class's probability as features are set to `baseline` in
    falling order of attribution, and the same in a random order (seeded)."""
    flat = inputs.reshape(len(inputs), -1)
    order = explanation.attributions.reshape(len(inputs), -1).argsort(dim=1, descending=True)
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in range(len(inputs))])
    return (
        _curve_area(model, inputs, flat, order, explanation.targets, baseline),
        _curve_area(model, inputs, flat, shuffled, explanation.targets, baseline),
    )


def _curve_area(
    model: nn.Module,
    inputs: torch.Tensor,
    flat: torch.Tensor,
    order: torch.Tensor,
    targets: torch.Tensor,
    baseline: float,
) -> float:
    """Return the mean over inputs of the area under the target's probability as `order` removes features."""
    features = flat.shape[1]
    points = []
    for k in torch.linspace(0, features, _STEPS + 1).round().long().tolist():
        removed = flat.clone()
        removed.scatter_(1, order[:, :k], baseline)
        probs = torch.softmax(model(removed.reshape(inputs.shape)), -1)
        points.append(probs.gather(1, targets[:, None]).squeeze(1))
    curve = torch.stack(points, 1)
    return float(torch.trapezoid(curve, dx=1.0 / _STEPS, dim=1).mean())


def _infidelity(model: nn.Module, inputs: torch.Tensor, explanation: Explanation) -> float:
    """Return Captum's infidelity: how far attribution × perturbation is from the change of the output, for
    small Gaussian perturbations."""
    from captum.metrics import infidelity

    generator = torch.Generator().manual_seed(0)

    def perturb(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.05 * x.std() * torch.randn(x.shape, generator=generator)
        return noise, x - noise

    value = infidelity(
        model, perturb, inputs, explanation.attributions, target=explanation.targets, n_perturb_samples=8
    )
    return float(value.mean())


def randomised_correlation(
    model: nn.Module, inputs: torch.Tensor, explanation: Explanation
) -> tuple[float, float]:
    """Return the mean Spearman correlation between each input's attributions and those the same method gives
    for the same model with every weight re-drawn (Adebayo et al.'s check, all layers at once): signed, and of
    magnitudes."""
    random = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in random.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (p.std() if p.numel() > 1 else 1.0))
    again = explain(random, inputs, explanation.method, explanation.targets, **explanation.options)
    a, b = explanation.attributions, again.attributions
    return spearman(a, b), spearman(a.abs(), b.abs())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Return the mean over rows of the Spearman rank correlation of `a`'s row with `b`'s (ties share their
    average rank: the many exact zeros of a sparse input must not count as agreement)."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.reshape(len(a), -1).numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.reshape(len(b), -1).numpy(), axis=1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return float(((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)).mean())
