"""What a self-supervised run is watched by, each epoch: how well its embeddings classify by their nearest
neighbours (a kNN monitor, as lightly's and solo-learn's), and whether they are collapsing — all examples
onto one point, or onto a few dimensions (the spread of normalised embeddings, and their effective rank)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

# below these, embeddings are collapsing: the spread per dimension (1 when the normalised embeddings use
# every dimension alike) and the effective rank as a share of the best epoch's
SPREAD_FLOOR, RANK_FALL = 0.2, 0.5


class CollapseWarning(UserWarning):
    """The embeddings of a self-supervised run are collapsing: they carry less and less about the inputs."""


def knn_accuracy(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.1,
) -> float:
    """Return the accuracy on `test` of a weighted kNN over `train`'s embeddings (Wu et al. 2018): each of the
    k most cosine-similar training examples votes for its class with weight exp(similarity / temperature)."""
    train, test = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    similarity, nearest = (test @ train.T).topk(min(k, len(train)), dim=1)
    votes = torch.zeros(len(test), classes).scatter_add_(
        1, train_labels[nearest], (similarity / temperature).exp()
    )
    return float((votes.argmax(1) == test_labels).float().mean())


def spread(embeddings: torch.Tensor) -> float:
    """Return the standard deviation of the L2-normalised embeddings per dimension × √dimensions: about 1 when
    they spread over every dimension, 0 when they have collapsed to one point."""
    normalised = F.normalize(embeddings.float(), dim=1)
    return float(normalised.std(dim=0).mean() * normalised.shape[1] ** 0.5)


def effective_rank(embeddings: torch.Tensor) -> float:
    """Return the effective rank of the embeddings (RankMe, Garrido et al. 2023): exp of the entropy of their
    normalised singular values — the number of dimensions they really use."""
    singular = torch.linalg.svdvals(embeddings.float() - embeddings.float().mean(0))
    p = singular / singular.sum().clamp_min(1e-12) + 1e-12
    return float(torch.exp(-(p * p.log()).sum()))


def warn_if_collapsing(epoch: int, figures: dict[str, float], best: dict[str, float]) -> None:
    """Warn when an epoch's embeddings fell to spread too little, or to half the effective rank of the best
    epoch (`best` holds the highest of each so far; a fresh network starts narrow and widens)."""
    falling = figures["spread"] < SPREAD_FLOOR and figures["spread"] < best["spread"]
    if falling or figures["effective_rank"] < RANK_FALL * best["effective_rank"]:
        warnings.warn(
            f"epoch {epoch}: the embeddings are collapsing (spread {figures['spread']:.3f}, effective rank "
            f"{figures['effective_rank']:.1f}, best {best['effective_rank']:.1f}): lower the learning rate, "
            "raise the temperature (SimCLR) or use stronger views",
            CollapseWarning,
            stacklevel=3,
        )
