"""One training under way (`Trainer`): where it runs, how it steps (optimizer, schedule, gradient
accumulation, DP-SGD's wrapper), which batches each epoch takes, and the best epoch so far."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from rich.progress import Progress
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import Batch, Learner, Tokens, length_grouped, take
from lepton_ai.device import autocast
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy import dp as private_dp
from lepton_ai.train import distributed

LossFn = Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor]


def cross_entropy(weight: torch.Tensor | None = None) -> LossFn:
    """Return the cross-entropy loss, each class weighted by `weight` when given."""

    def loss(logits: torch.Tensor, labels: torch.Tensor, _inputs: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits, labels, weight=None if weight is None else weight.to(logits)
        )

    return loss


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return each class's weight n / (k · n_class), scikit-learn's "balanced" (a missing class weighs 0)."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp_min(1)), 0.0).float()


def scheduler(
    name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int, warmup: float = 0.0
) -> torch.optim.lr_scheduler.LRScheduler:
    """Return the learning-rate schedule `name` over `total_steps` optimizer steps."""
    if name == "linear":
        # up from lr / warm over the warmup steps, then down to 0 at the last step (Hugging Face's)
        total, warm = max(1, total_steps), max(1, round(warmup * total_steps))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@dataclass(frozen=True)
class Placement:
    """Where a training runs: this process's rank among `world_size`, its device and precision."""

    rank: int
    world_size: int
    device: torch.device
    precision: str
    channels_last: bool

    @property
    def main(self) -> bool:
        """Return whether this process is the one that logs and writes (rank 0)."""
        return self.rank == 0


@dataclass
class Best:
    """The epoch whose validation figure `select_by` is best so far (lowest for loss), and its weights."""

    score: float = -math.inf
    epoch: int = -1
    state: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Sampling:
    """How an epoch draws its batches: "random" (each example once) or "balanced" (as many draws, each class
    equally likely), and whether batches group texts of like length."""

    how: str = "random"
    group_by_length: bool = True


@dataclass
class Trainer:
    """One training under way: the model, how it steps (optimizer, schedule, DP-SGD) and its history."""

    model: nn.Module
    spec: Learner
    where: Placement
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    private: private_dp.PrivateTraining | None
    batch_size: int
    max_grad_norm: float | None = None
    loss_fn: LossFn = field(default_factory=cross_entropy)
    grad_accum: int = 1
    sampling: Sampling = field(default_factory=Sampling)
    select_by: str = "loss"
    # what the steps call: the model itself, or Opacus's, torch.compile's or DDP's wrapper of it
    step_model: nn.Module | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    start_epoch: int = 0

    def plan(self, data: LabeledData, xs: torch.Tensor | Tokens, epoch: int, seed: int) -> list[torch.Tensor]:
        """Return the batches (index tensors) this rank takes in `epoch`."""
        if self.private is not None:
            return self.private.epoch_batches(epoch)
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        if self.sampling.how == "balanced":
            weights = balanced_weights(data.labels, self.spec.num_classes)[data.labels]
            order = torch.multinomial(weights, len(data), replacement=True, generator=generator)
        else:
            order = torch.randperm(len(data), generator=generator)
        # the same order on every rank, split between them
        order = distributed.shard(order, self.where.rank, self.where.world_size)
        if isinstance(xs, Tokens) and self.sampling.group_by_length:
            return length_grouped(order, xs.lengths, self.batch_size, generator)
        return list(order.split(self.batch_size))

    def epoch(
        self,
        data: LabeledData,
        xs: torch.Tensor | Tokens,
        plan: list[torch.Tensor],
        bar: Progress,
        title: str,
    ) -> dict[str, float]:
        """Run one epoch of `plan`'s batches; return its figures, summed over ranks."""
        where, labels, every = self.where, data.labels, self.grad_accum
        self.model.train()
        task = bar.add_task(title, total=len(plan), loss=0.0, acc=0.0, rate=0.0)
        e0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for i, idx in enumerate(plan):
            x = take(self.spec, xs, idx, where.device, where.channels_last)
            y = labels[idx].to(where.device, non_blocking=True)
            logits, loss = self.step(
                x, y, first=i % every == 0, last=(i + 1) % every == 0 or i + 1 == len(plan)
            )
            seen += len(y)
            # a Poisson batch may be empty
            loss_sum += float(loss.detach()) * len(y) if len(y) else 0.0
            # embedding models (distillation) have no classes
            if self.spec.num_classes:
                correct += int((logits.argmax(-1) == y).sum())
            rate = seen * where.world_size / (time.perf_counter() - e0)
            bar.update(task, advance=1, loss=loss_sum / max(seen, 1), acc=correct / max(seen, 1), rate=rate)
        # every rank's share of the epoch, added up: rank 0 reports the global figures
        if where.world_size > 1:
            totals = torch.tensor([seen, loss_sum, correct], dtype=torch.float64)
            seen, loss_sum, correct = distributed.all_reduce_sum(totals).tolist()
            distributed.sync_buffers(self.model)
        seconds = time.perf_counter() - e0
        return {
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "seconds": seconds,
            "samples_per_s": seen / seconds,
            "lr": float(self.scheduler.get_last_lr()[0]),
        }

    def step(
        self, x: Batch, y: torch.Tensor, first: bool = True, last: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the batch (x, y)'s gradients (the first of an accumulation clears them); on the last, take the
        optimizer step. Return the batch's logits and loss."""
        assert self.step_model is not None
        if first:
            self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks at the last batch of an accumulation only
        syncs = last or not isinstance(self.step_model, DistributedDataParallel)
        with contextlib.nullcontext() if syncs else cast(DistributedDataParallel, self.step_model).no_sync():
            with autocast(self.where.device, self.where.precision):
                logits = self.step_model(x)
                loss = self.loss_fn(logits.float(), y, x)
            self.scaler.scale(loss / self.grad_accum).backward()
        if last:
            if self.max_grad_norm:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        return logits, loss

    def remember_best(self, row: dict[str, float]) -> bool:
        """Keep this epoch's trained weights when its validation figure is the best yet; say if it was."""
        value = row[f"val_{self.select_by}"]
        score = -value if self.select_by == "loss" else value
        if score <= self.best.score:
            return False
        # what training changes: frozen weights (a LoRA adapter's base) stay as they are
        changing = {n for n, p in self.model.named_parameters() if p.requires_grad}
        changing |= {n for n, _ in self.model.named_buffers()}
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k in changing}
        self.best = Best(score, int(row["epoch"]), state)
        return True

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        """Return everything a resumed training needs after `epoch` (model, optimizer, schedule, RNG…)."""
        state: dict[str, Any] = {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "history": self.history,
            "best": {"score": self.best.score, "epoch": self.best.epoch, "state": self.best.state},
        }
        if self.where.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.where.device)
        if self.private is not None:
            state["privacy"] = self.private.state_dict()
        return state

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint that `checkpoint` wrote."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"])
        if self.where.device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.where.device)
        # a checkpoint from before model selection kept no score: its best is forgotten, not misread
        best = Best(**ckpt["best"]) if "score" in ckpt["best"] else Best()
        self.history, self.best, self.start_epoch = ckpt["history"], best, ckpt["epoch"] + 1
        if self.private is not None or ckpt.get("privacy"):
            if self.private is None:
                raise InvalidInputError(
                    "the checkpoint was written by a private (dp) run: resume it with the same dp "
                    "options, or start afresh without --resume"
                )
            self.private.load_state_dict(ckpt.get("privacy"))
