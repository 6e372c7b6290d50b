"""Self-supervised losses, written from the papers' formulas: NT-Xent (SimCLR, Chen et al. 2020) and VICReg
(Bardes, Ponce and LeCun 2022). In a data-parallel job both see the embeddings of every rank, gathered with
their gradients."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from lepton_ai.errors import InvalidInputError


class NTXentLoss(nn.Module):
    """SimCLR's loss over two views' embeddings z1, z2 (N × D each): for each of the 2N embeddings, the cross
    entropy of finding its other view among the 2N − 1 others by cosine similarity / `temperature`; the
    negatives are every other embedding of the batch, on every rank."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise InvalidInputError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        n = _check_pair(z1, z2)
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        # this rank's embeddings are anchors; every rank's are candidates
        everyone1, everyone2, offset = gather(z1), gather(z2), _rank() * n
        total = len(everyone1)
        logits = torch.cat([z1, z2]) @ torch.cat([everyone1, everyone2]).T / self.temperature
        local = torch.arange(n, device=z1.device) + offset
        itself = torch.cat([local, local + total])
        other_view = torch.cat([local + total, local])
        logits = logits.masked_fill(F.one_hot(itself, 2 * total).bool(), float("-inf"))
        return F.cross_entropy(logits, other_view)


class VICRegLoss(nn.Module):
    """VICReg's loss over two views' embeddings z1, z2 (N × D): `invariance` × the mean squared distance
    between the views, + `variance` × the hinge keeping each dimension's standard deviation at 1 (per view),
    + `covariance` × the squared off-diagonal covariances / D (per view); over every rank's batch."""

    def __init__(
        self, invariance: float = 25.0, variance: float = 25.0, covariance: float = 1.0, eps: float = 1e-4
    ) -> None:
        super().__init__()
        self.invariance, self.variance, self.covariance, self.eps = invariance, variance, covariance, eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        _check_pair(z1, z2)
        z1, z2 = gather(z1), gather(z2)
        invariance = F.mse_loss(z1, z2)
        variance = (self._variance(z1) + self._variance(z2)) / 2
        covariance = self._covariance(z1) + self._covariance(z2)
        return self.invariance * invariance + self.variance * variance + self.covariance * covariance

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - torch.sqrt(z.var(dim=0) + self.eps)).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (n - 1)
        off_diagonal = cov - torch.diag(torch.diag(cov))
        return off_diagonal.pow(2).sum() / d


def gather(z: torch.Tensor) -> torch.Tensor:
    """Return the embeddings of every rank of a data-parallel job, in rank order (z alone outside one); the
    gradient flows back to each rank's own."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    return torch.cat(_Gather.apply(z))


class _Gather(torch.autograd.Function):
    """all_gather that keeps gradients (solo-learn's GatherLayer): each rank's embeddings get the gradient
    every rank's loss gives them."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.zeros_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(out, z.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        summed = torch.stack(grads)
        dist.all_reduce(summed)
        return summed[dist.get_rank()]


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _check_pair(z1: torch.Tensor, z2: torch.Tensor) -> int:
    """Return the batch size of two views' embeddings; refuse a pair of different shapes or of one example."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise InvalidInputError(
            f"two views' embeddings must be N × D of one shape, got {z1.shape} and {z2.shape}"
        )
    if len(z1) < 2:
        raise InvalidInputError(
            "a batch of 1 example has no negatives and no spread to measure: use a batch size of at least 2"
        )
    return len(z1)
