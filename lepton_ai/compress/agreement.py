"""Whether a compressed candidate still decides for the same reasons: the rank correlation of its
attributions with the baseline's on a sample (occlusion: it needs no gradient, so any runtime is measured)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from lepton_ai.explain.attribution import explain
from lepton_ai.explain.scores import spearman

# examples the agreement is measured on: enough for a stable mean, quick for every candidate
SAMPLE = 32


class Judged(Protocol):
    """A candidate as the search keeps it: its runnable, whether it passes, and why not."""

    model: Any
    accepted: bool
    reason: str
    attribution_agreement: float | None


def agreements(trials: Sequence[Judged], sample: torch.Tensor, minimum: float | None) -> None:
    """Set each trial's agreement with the first (the baseline) on `sample`, and reject those below
    `minimum`."""
    x = sample[:SAMPLE].float()
    base = explain(_forward(trials[0].model), x, "occlusion")
    trials[0].attribution_agreement = 1.0
    for t in trials[1:]:
        # the baseline's classes: does the candidate look where the baseline looked for them
        got = explain(_forward(t.model), x, "occlusion", target=base.targets)
        t.attribution_agreement = spearman(base.attributions, got.attributions)
        if minimum is not None and t.accepted and t.attribution_agreement < minimum:
            t.accepted, t.reason = False, f"attribution agreement {t.attribution_agreement:.3f} < {minimum}"


def _forward(runnable: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.as_tensor(runnable(x)).float().clone()

    return forward
