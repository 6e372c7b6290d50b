"""NT-Xent and VICReg against the papers' formulas: cases worked by hand, and a literal transcription."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lepton_ai.errors import InvalidInputError
from lepton_ai.ssl import NTXentLoss, VICRegLoss


def ntxent_by_the_paper(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR's eq. 1, averaged over all 2N anchors, one term at a time."""
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        below = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / below)
    return total / (2 * n)


def test_ntxent_of_two_orthogonal_pairs_is_log_1_plus_2_over_e() -> None:
    # each anchor: its positive at similarity 1, two negatives at 0 (temperature 1)
    z = torch.eye(2)
    assert float(NTXentLoss(temperature=1.0)(z, z)) == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_ntxent_matches_the_papers_formula(t: float) -> None:
    z1, z2 = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), torch.randn(6, 5)
    assert float(NTXentLoss(t)(z1, z2)) == pytest.approx(ntxent_by_the_paper(z1, z2, t), rel=1e-5)


def test_vicreg_of_a_worked_case() -> None:
    # equal views: no invariance term; per-dimension std √2 > 1: no variance term; covariance
    # [[2, 2], [2, 2]]: off-diagonal squares 8, / 2 dimensions, two views: 8
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    assert float(VICRegLoss()(z, z)) == pytest.approx(8.0, abs=1e-6)


def test_vicreg_terms_match_the_papers_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 4, generator=g) * 0.5, torch.randn(8, 4, generator=g)
    inv = float(((z1 - z2) ** 2).mean())
    var = sum(float(torch.clamp(1 - torch.sqrt(z.var(0) + 1e-4), min=0).mean()) for z in (z1, z2)) / 2
    cov = 0.0
    for z in (z1, z2):
        c = torch.cov(z.T)
        cov += float((c**2).sum() - (torch.diag(c) ** 2).sum()) / 4
    expected = 25 * inv + 25 * var + 1 * cov
    assert float(VICRegLoss()(z1, z2)) == pytest.approx(expected, rel=1e-5)


def test_a_batch_of_one_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="batch of 1"):
        NTXentLoss()(torch.ones(1, 3), torch.ones(1, 3))
    with pytest.raises(InvalidInputError, match="one shape"):
        VICRegLoss()(torch.ones(2, 3), torch.ones(2, 4))
