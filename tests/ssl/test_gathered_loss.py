"""In a process group the losses see every rank's embeddings: two gloo ranks, each with half the batch, get
the loss and the gradients of one process holding it all."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lepton_ai.ssl import NTXentLoss, VICRegLoss

LOSSES = {"ntxent": lambda: NTXentLoss(0.5), "vicreg": VICRegLoss}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)


def _rank(rank: int, port: int, loss: str, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    z1, z2 = (z[rank * 4 : (rank + 1) * 4].clone().requires_grad_() for z in _batch())
    value = LOSSES[loss]()(z1, z2)
    value.backward()
    assert z1.grad is not None
    torch.save({"loss": value.detach(), "grad": z1.grad}, out / f"{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("loss", ["ntxent", "vicreg"])
def test_two_ranks_compute_what_one_process_does(loss: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, loss, tmp_path), nprocs=2)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    z1, z2 = (z.clone().requires_grad_() for z in _batch())
    whole = LOSSES[loss]()(z1, z2)
    whole.backward()
    assert z1.grad is not None
    # DDP averages the ranks' gradients: NT-Xent's loss is each rank's anchors' mean, VICReg's the whole
    # batch's
    per_rank = torch.stack([r["loss"] for r in ranks])
    expected_loss = per_rank.mean() if loss == "ntxent" else per_rank[0]
    assert float(expected_loss) == pytest.approx(float(whole), rel=1e-5)
    if loss == "vicreg":
        assert float(per_rank[1]) == pytest.approx(float(whole), rel=1e-5)
    gathered = torch.cat([r["grad"] for r in ranks]) / 2
    assert torch.allclose(gathered, z1.grad, atol=1e-6)
