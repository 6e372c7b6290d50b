"""Membership inference, the statistics: scores of a loss-threshold attack (Yeom et al. 2018) and of LiRA
(Carlini et al. 2022, "Membership Inference Attacks From First Principles"), and how well scores tell members
from non-members (ROC AUC, true-positive rate at a low false-positive rate, bootstrap intervals).

NumPy and SciPy only: `lepton models show` describes a stored audit without importing torch.

LiRA looks at each example's logit-scaled confidence φ = log(p_y / (1 − p_y)) under shadow models trained with
(IN) and without (OUT) it, fits a Gaussian to each side, and scores the target's φ by the likelihood ratio
(online), or, with OUT models alone, by the one-sided test Λ = Pr[Z < φ], Z ~ N(μ_out, σ²_out) (offline: the
paper's one-sided test; its published code scores the OUT density instead). Below 64 shadow models each side's
variance is pooled over all examples: the "fixed variance" LiRA's authors found best with few of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

# Shadow models a side needs per example before its own variance is used over the pooled one: with 16 shadow
# models in all, LiRA's authors found the pooled ("fixed") variance better.
PER_EXAMPLE_VARIANCE_FROM = 32
# Below this, a standard deviation is taken as this (all shadows agreeing exactly).
_MIN_STD = 1e-6


@dataclass(frozen=True)
class Interval:
    """A confidence interval: its lower and upper ends."""

    low: float
    high: float

    def covers(self, value: float) -> bool:
        """Return whether `value` lies in the interval (ends included)."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class AttackFigures:
    """How well one attack's scores tell members from non-members: ROC AUC and the true-positive rate at the
    audit's false-positive rate, each with its bootstrap confidence interval."""

    auc: float
    auc_ci: Interval
    tpr: float
    tpr_ci: Interval

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackFigures:
        """Return the figures `to_dict` wrote."""
        return cls(d["auc"], Interval(*d["auc_ci"]), d["tpr"], Interval(*d["tpr_ci"]))

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready figures, each interval as [low, high]."""
        return {
            "auc": self.auc,
            "auc_ci": [self.auc_ci.low, self.auc_ci.high],
            "tpr": self.tpr,
            "tpr_ci": [self.tpr_ci.low, self.tpr_ci.high],
        }


@dataclass(frozen=True)
class AuditResult:
    """A membership-inference audit of one model: both attacks' figures and how they were obtained."""

    ref: str | None
    data: str
    members: int
    non_members: int
    shadow_models: int
    # "online" (IN and OUT shadow models) or "offline" (OUT only)
    variant: str
    loss: AttackFigures
    lira: AttackFigures
    member_accuracy: float
    non_member_accuracy: float
    fpr: float = 0.01
    confidence: float = 0.95
    resamples: int = 200
    seconds: float = 0.0
    # the target's ε when it was trained with differential privacy
    epsilon: float | None = None
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the audit as JSON-ready data (what is stored with the version and `--json` prints)."""
        return {**asdict(self), "loss": self.loss.to_dict(), "lira": self.lira.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditResult:
        """Return the audit `to_dict` wrote (keys it does not know, such as when it was stored, are left)."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(
            **{
                **known,
                "loss": AttackFigures.from_dict(d["loss"]),
                "lira": AttackFigures.from_dict(d["lira"]),
            }
        )


def describe(audit: dict[str, Any]) -> str:
    """Return a stored audit as one line for people: each attack's AUC and TPR at the FPR, with intervals."""
    result = AuditResult.from_dict(audit)
    pct = f"{result.confidence:.0%}"

    def figures(f: AttackFigures) -> str:
        return (
            f"AUC {f.auc:.3f} [{f.auc_ci.low:.3f}, {f.auc_ci.high:.3f}], TPR at {result.fpr:.0%} FPR "
            f"{f.tpr:.1%} [{f.tpr_ci.low:.1%}, {f.tpr_ci.high:.1%}]"
        )

    return (
        f"LiRA ({result.variant}, {result.shadow_models} shadow models) {figures(result.lira)}; "
        f"loss threshold {figures(result.loss)} ({pct} intervals, {result.members} members against "
        f"{result.non_members} non-members)"
    )


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return each example's φ = log(p_y / (1 − p_y)) from its logits, computed stably as z_y − logsumexp of
    the other classes' logits."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    others = z.copy()
    others[rows, labels] = -np.inf
    return z[rows, labels] - np.logaddexp.reduce(others, axis=1)


def log_likelihood(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return each example's log p_y (minus its cross-entropy loss): the loss-threshold attack's score."""
    z = np.asarray(logits, dtype=np.float64)
    return z[np.arange(len(z)), labels] - np.logaddexp.reduce(z, axis=1)


def balanced_halves(shadow_models: int, examples: int, rng: np.random.Generator) -> np.ndarray:
    """Return which examples each shadow model trains on (shadow_models × examples): a random half each, and
    each example in half of the models (⌊K/2⌋ or ⌈K/2⌉), as LiRA's code draws them."""
    order = rng.uniform(size=(shadow_models, examples)).argsort(0)
    # K odd: the odd model goes IN for a random half of the examples
    extra = rng.uniform(size=examples) < 0.5 if shadow_models % 2 else np.zeros(examples, dtype=bool)
    return order < shadow_models // 2 + extra


def _side(phi: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float | np.ndarray]:
    """Return each example's mean φ over the shadow models `mask` picks, and the standard deviation to use:
    the example's own with enough models, else pooled over every example (else φ's overall spread)."""
    values = np.where(mask, phi, np.nan)
    counts = mask.sum(0)
    mean = np.nanmean(values, axis=0)
    residuals = values - mean
    if counts.min() >= PER_EXAMPLE_VARIANCE_FROM:
        return mean, np.maximum(np.nanstd(residuals, axis=0, ddof=1), _MIN_STD)
    free = counts.sum() - len(counts)
    pooled = np.sqrt(np.nansum(residuals**2) / free) if free > 0 else np.std(phi[mask])
    return mean, max(float(pooled), _MIN_STD)


def lira_scores(target: np.ndarray, shadows: np.ndarray, member: np.ndarray, offline: bool) -> np.ndarray:
    """Return LiRA's score of each example (higher: more likely a member) from the target's φ (n), the shadow
    models' φ (K × n) and which shadow models trained on which example (K × n)."""
    mean_out, std_out = _side(shadows, ~member)
    if offline:
        return np.asarray(stats.norm.logcdf(target, mean_out, std_out))
    mean_in, std_in = _side(shadows, member)
    return np.asarray(
        stats.norm.logpdf(target, mean_in, std_in) - stats.norm.logpdf(target, mean_out, std_out)
    )


def auc(scores: np.ndarray, member: np.ndarray) -> float:
    """Return the ROC AUC of `scores` (higher: member): the chance a member outscores a non-member, ties
    half."""
    ranks = stats.rankdata(scores)
    positives = int(member.sum())
    negatives = len(member) - positives
    return float((ranks[member].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tpr_at(scores: np.ndarray, member: np.ndarray, fpr: float) -> float:
    """Return the largest share of members a threshold flags while flagging at most `fpr` of the
    non-members."""
    negatives = np.sort(scores[~member])[::-1]
    allowed = int(np.floor(fpr * len(negatives) + 1e-9))
    # flag what scores above the first non-member the threshold must leave out
    threshold = negatives[allowed] if allowed < len(negatives) else -np.inf
    return float((scores[member] > threshold).mean())


def figures(
    scores: np.ndarray,
    member: np.ndarray,
    *,
    fpr: float = 0.01,
    resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> AttackFigures:
    """Return the AUC and TPR at `fpr` of `scores`, with percentile intervals over `resamples` bootstrap
    resamples of the examples (members and non-members each resampled to their own number)."""
    rng = np.random.default_rng(seed)
    inside, outside = np.flatnonzero(member), np.flatnonzero(~member)
    labels = np.r_[np.ones(len(inside), dtype=bool), np.zeros(len(outside), dtype=bool)]
    aucs, tprs = np.empty(resamples), np.empty(resamples)
    for b in range(resamples):
        drawn = np.r_[rng.choice(inside, len(inside)), rng.choice(outside, len(outside))]
        aucs[b], tprs[b] = auc(scores[drawn], labels), tpr_at(scores[drawn], labels, fpr)
    tail = 100 * (1 - confidence) / 2

    def interval(values: np.ndarray) -> Interval:
        low, high = np.percentile(values, [tail, 100 - tail])
        return Interval(float(low), float(high))

    return AttackFigures(auc(scores, member), interval(aucs), tpr_at(scores, member, fpr), interval(tprs))
