"""Data-parallel training with torch.distributed, as torchrun launches it: who this process is,
joining and leaving the process group, sharding an epoch, reducing figures, and the torchrun
command line that starts it all (nanoGPT style: no framework, a few functions)."""

from __future__ import annotations

import datetime
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from lepton_ai.device import resolve_device
from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import cpu_info

# a rank that never shows up (or dies between collectives) fails the job instead of hanging it
INIT_TIMEOUT_S = 120


class World(NamedTuple):
    """Where this process sits: global rank, rank on its machine, and the sizes of both."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int


def world() -> World:
    """Return this process's rank, local rank, world size and local world size from torchrun's
    environment ((0, 0, 1, 1) outside torchrun)."""
    env = os.environ
    return World(
        int(env.get("RANK", 0)),
        int(env.get("LOCAL_RANK", 0)),
        int(env.get("WORLD_SIZE", 1)),
        int(env.get("LOCAL_WORLD_SIZE", 1)),
    )


def launched() -> bool:
    """Return whether torchrun started this process (it sets LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def active() -> bool:
    """Return whether a process group of more than one process is set up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size() -> tuple[int, int]:
    """Return (rank, world size) of the process group, (0, 1) without one."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def is_main() -> bool:
    """Return whether this process is the one that writes: rank 0, or the only process."""
    return rank_and_size()[0] == 0


def setup(device: str = "auto") -> bool:
    """Join torchrun's process group (nccl with one GPU per local rank, gloo on CPU) and use
    cores // local processes torch threads; return whether this call set the group up."""
    w = world()
    if not launched() or w.world_size < 2 or dist.is_initialized():
        return False
    torch.set_num_threads(max(1, cpu_info()["cores"] // w.local_world_size))
    # when one rank fails torchrun SIGTERMs the
    if threading.current_thread() is threading.main_thread():
        # others: unwind, so rank 0's run ends as failed
        signal.signal(signal.SIGTERM, _stopped)
    timeout = datetime.timedelta(seconds=INIT_TIMEOUT_S)
    if resolve_device(device).type == "cuda":
        if w.local_rank >= torch.cuda.device_count():
            raise InvalidInputError(
                f"{w.local_world_size} processes on this machine but {torch.cuda.device_count()} "
                "GPU(s): one GPU per process, so use fewer processes or --device cpu"
            )
        torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", w.local_rank))
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return True


def _stopped(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def teardown() -> None:
    """Leave the process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Return the element-wise sum of `values` over all ranks (`values` itself in one process), on the CPU."""
    if not active():
        return values
    total = values.detach().to(_comm_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu()


def broadcast_object(obj: Any) -> Any:
    """Return rank 0's `obj` on every rank (`obj` itself in one process)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: nn.Module) -> None:
    """Copy rank 0's floating-point buffers (batch-norm statistics) to every rank: DDP keeps the weights
    equal, but each rank's last training step updated its own running statistics."""
    if active():
        for b in module.buffers():
            if b.is_floating_point():
                dist.broadcast(b.data, src=0)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Return rank `rank`'s share of the permutation `order`, as DistributedSampler makes it: padded by
    wrapping around to a multiple of `world_size` (every rank takes the same number of steps), then
    every `world_size`-th index from `rank`."""
    if world_size == 1:
        return order
    total = math.ceil(len(order) / world_size) * world_size
    padded = order.repeat(math.ceil(total / len(order)))[:total]
    return padded[rank:total:world_size]


def check_launch(nproc: int, nnodes: int, rdzv: str | None, node_rank: int | None) -> None:
    """Raise InvalidInputError naming the option when a data-parallel launch cannot work."""
    if nproc < 1:
        raise InvalidInputError(f"--nproc must be at least 1 (processes on this machine), not {nproc}")
    if nnodes < 1:
        raise InvalidInputError(f"--nnodes must be at least 1, not {nnodes}")
    if nnodes > 1 and not rdzv:
        raise InvalidInputError("--nnodes > 1 needs --rdzv HOST:PORT, an address every machine can reach")
    if rdzv is not None:
        host, _, port = rdzv.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInputError(f"--rdzv must be HOST:PORT (e.g. node0:29400), not {rdzv!r}")
    if node_rank is not None and not 0 <= node_rank < nnodes:
        raise InvalidInputError(
            f"--node-rank must be in 0..{nnodes - 1} for --nnodes {nnodes}, not {node_rank}"
        )


def torchrun_argv(
    nproc: int,
    nnodes: int,
    rdzv: str | None,
    node_rank: int | None,
    args: Sequence[str],
    rdzv_id: str = "lepton",
) -> list[str]:
    """Return the argv that runs `lepton ARGS` in `nproc` processes per machine on `nnodes` machines
    through torchrun: standalone on one machine; with `node_rank`, a static rendezvous whose node 0
    listens at `rdzv`; otherwise c10d at `rdzv`, nodes joining in any order under `rdzv_id`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if nnodes == 1 and not rdzv:
        # a free local port, so concurrent jobs on one machine do not collide
        cmd.append("--standalone")
    elif node_rank is not None:
        cmd += ["--rdzv-backend=static", f"--rdzv-endpoint={rdzv}", f"--node-rank={node_rank}"]
    else:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv}", f"--rdzv-id={rdzv_id}"]
    return [*cmd, "-m", "lepton_ai.cli.main", *args]
