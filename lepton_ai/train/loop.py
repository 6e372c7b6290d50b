"""The training loop (nanoGPT-style: no trainer framework) and evaluation.

`fit` is a recipe of named steps: check the options, place the model, restore a checkpoint or
initialise, build the optimizer (and DP-SGD's wrapper), then one epoch, an evaluation and a
checkpoint at a time. What happens to each epoch's figures (a registry run, a log) is the caller's:
it passes `on_epoch`."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import Batch, Learner, as_inputs, batches, check_data, take
from lepton_ai.device import autocast, resolve_device, resolve_precision
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy import dp as private_dp
from lepton_ai.privacy.dp import DPConfig
from lepton_ai.train import distributed
from lepton_ai.train.checkpoint import load_checkpoint, save_checkpoint
from lepton_ai.train.recipe import SCHEDULES, Recipe, recipe_for, say_if_it_learned_nothing

# Rows of the training split that input standardisation looks at: enough for stable statistics.
_NORMALIZE_ROWS = 20000

LossFn = Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor]
# Called on rank 0 after each epoch with its number and figures (train_loss, val_accuracy, …).
EpochCallback = Callable[[int, dict[str, float]], None]


def learner(model: nn.Module) -> Learner:
    """Return `model` as a Learner, or raise naming what it lacks (LeptonModel is one)."""
    if not isinstance(model, Learner):
        raise InvalidInputError(
            f"{type(model).__name__} is not a model lepton_ai can train: use a LeptonModel (or a module with "
            "num_classes, input_size, preprocess, is_text, normalizer and tokenize)"
        )
    return model


@torch.no_grad()
def evaluate(
    model: nn.Module, data: LabeledData, batch_size: int = 256, shard: bool = False
) -> dict[str, float]:
    """Return accuracy, mean cross-entropy loss and macro F1 of `model` on `data`.

    `shard=True` in a process group (call it on every rank): each rank scores every world_size-th
    example and the ranks add up their shares, so every rank returns the figures of the whole set."""
    from sklearn.metrics import f1_score

    spec = learner(model)
    check_data(spec, data)
    model.eval()
    device = next(model.parameters()).device
    rank, world_size = distributed.rank_and_size() if shard else (0, 1)
    idx = torch.arange(rank, len(data), world_size)
    logits = torch.cat(
        [model(x).float().cpu() for x in batches(spec, as_inputs(spec, data), batch_size, device, idx)]
    )
    labels = data.labels
    pred, losses = logits.argmax(-1), nn.functional.cross_entropy(logits, labels[idx], reduction="none")
    # each example is scored by one rank: the sum of the shares is the whole set
    if world_size > 1:
        both = torch.zeros(2, len(data), dtype=torch.float64)
        both[0, idx], both[1, idx] = pred.double(), losses.double()
        both = distributed.all_reduce_sum(both)
        pred, losses = both[0].long(), both[1].float()
    classes = list(range(spec.num_classes))
    f1 = f1_score(labels.numpy(), pred.numpy(), average="macro", labels=classes, zero_division=0)
    return {
        "accuracy": float((pred == labels).float().mean()),
        "loss": float(losses.mean()),
        "f1_macro": float(f1),
    }


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, _inputs: Batch) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels)


def _scheduler(
    name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int, warmup: float = 0.0
) -> torch.optim.lr_scheduler.LRScheduler:
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
    """The epoch with the lowest validation loss so far, and its weights when early stopping keeps them."""

    val_loss: float = math.inf
    epoch: int = -1
    state: dict[str, torch.Tensor] | None = None


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
    loss_fn: LossFn = _cross_entropy
    # what the steps call: the model itself, or Opacus's, torch.compile's or DDP's wrapper of it
    step_model: nn.Module | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    start_epoch: int = 0

    def epoch(
        self, data: LabeledData, epoch: int, order: torch.Tensor, bar: Progress, epochs: int
    ) -> dict[str, float]:
        """Run one epoch over this rank's share of `order`; return its figures, summed over ranks."""
        where = self.where
        self.model.train()
        # the same permutation on every rank, split between them
        order = distributed.shard(order, where.rank, where.world_size)
        plan = (
            self.private.epoch_batches(epoch)
            if self.private is not None
            else list(order.split(self.batch_size))
        )
        task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=len(plan), loss=0.0, acc=0.0, rate=0.0)
        xs, labels = as_inputs(self.spec, data), data.labels
        e0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for idx in plan:
            x = take(self.spec, xs, idx, where.device, where.channels_last)
            y = labels[idx].to(where.device, non_blocking=True)
            logits, loss = self.step(x, y)
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
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "seconds": seconds,
            "samples_per_s": seen / seconds,
            "lr": float(self.scheduler.get_last_lr()[0]),
        }

    def step(self, x: Batch, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Take one optimizer step on the batch (x, y); return its logits and loss."""
        assert self.step_model is not None
        with autocast(self.where.device, self.where.precision):
            logits = self.step_model(x)
            loss = self.loss_fn(logits.float(), y, x)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return logits, loss

    def remember_best(self, row: dict[str, float], keep_weights: bool) -> None:
        """Record this epoch as the best when its validation loss is the lowest yet."""
        if row["val_loss"] < self.best.val_loss:
            state = self.model.state_dict()
            weights = {k: v.detach().cpu().clone() for k, v in state.items()} if keep_weights else None
            self.best = Best(row["val_loss"], int(row["epoch"]), weights)

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
            "best": {"val_loss": self.best.val_loss, "epoch": self.best.epoch, "state": self.best.state},
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
        self.history, self.best, self.start_epoch = ckpt["history"], Best(**ckpt["best"]), ckpt["epoch"] + 1
        if self.private is not None or ckpt.get("privacy"):
            if self.private is None:
                raise InvalidInputError(
                    "the checkpoint was written by a private (dp) run: resume it with the same dp "
                    "options, or start afresh without --resume"
                )
            self.private.load_state_dict(ckpt.get("privacy"))


def fit(
    model: nn.Module,
    train_data: LabeledData,
    val_data: LabeledData | None = None,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    schedule: str | None = None,
    warmup: float | None = None,
    early_stopping: int | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    max_grad_norm: float | None = None,
    loss_fn: LossFn | None = None,
    dp: DPConfig | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model` on `train_data`; return per-epoch history, time, device and precision.

    Options left as None take the model family's recipe (`lepton_ai.train.recipe`): a text transformer is
    fine-tuned with AdamW at lr 5e-5, 10 % linear warmup then linear decay, weight decay 0.01 and gradient
    clipping at 1.0, for 3 epochs of batch 16; the built-in backbones train from scratch at lr 3e-3,
    cosine schedule, 10 epochs of batch 64. `max_grad_norm=0` turns clipping off. A classifier that ends
    no better than always answering the most common validation class gets a `TrainingNotice` saying so.

    With `checkpoint_dir` every epoch ends with an atomic checkpoint (model, optimizer,
    scheduler, grad scaler, RNG); `resume=True` continues from it. `early_stopping=N` stops
    after N epochs without a better validation loss and restores the best weights.
    `loss_fn(logits, labels, inputs)` replaces cross-entropy (distillation uses it);
    `on_epoch(epoch, figures)` is called after every epoch (on rank 0), e.g. to log them to a run.

    `dp=DPConfig(epsilon, delta, max_grad_norm)` (or the same as a dict) trains with DP-SGD through
    Opacus (`lepton_ai.privacy.dp`): layers it cannot train are replaced (BatchNorm → GroupNorm), each
    epoch is `steps` Poisson-sampled batches of expected size `batch_size`, and the history's
    "privacy" block states the ε spent (None without dp).

    Inside a process group (`distributed.setup()` under torchrun) it trains data-parallel: each rank
    takes its shard of every epoch's permutation, DDP averages the gradients, the figures are summed
    over ranks, and only rank 0 logs metrics and writes checkpoints. `batch_size` is per process."""
    spec = learner(model)
    r = recipe_for(
        spec.is_text,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup=warmup,
        max_grad_norm=max_grad_norm,
    )
    _check(spec, train_data, val_data, r)
    private = DPConfig.of(dp)
    where = _place(device, "fp32" if private is not None else precision, spec.is_text)
    if private is not None:
        private_dp.check_options(
            world_size=where.world_size, compile=compile, precision=precision, max_grad_norm=max_grad_norm
        )
        private_dp.make_compatible(model)
    # rank 0's checkpoint: the other machines may not share its disk
    ckpt = distributed.broadcast_object(
        load_checkpoint(checkpoint_dir) if (checkpoint_dir and resume and where.main) else None
    )
    if ckpt is None:
        _initialise(spec, train_data, val_data, seed + where.rank, private=private is not None)
    trainer = _trainer(model, spec, where, train_data, private, r, seed)
    # under DP-SGD Opacus clips each example's gradient: no clipping of the batch's on top
    trainer.max_grad_norm, trainer.loss_fn = None if private else r.max_grad_norm, loss_fn or _cross_entropy
    if ckpt is not None:
        trainer.restore(ckpt)
        # the other ranks must not repeat rank 0's dropout masks
        if where.rank:
            torch.manual_seed(seed * 1000 + trainer.start_epoch * 100 + where.rank)
    trainer.step_model = _wrap(trainer.step_model or model, where, compile=compile, is_text=spec.is_text)
    t0, stopped_early = time.perf_counter(), False
    with _progress_bar(progress and where.main) as bar, trainer.private or contextlib.nullcontext():
        for epoch in range(trainer.start_epoch, r.epochs):
            order = torch.randperm(
                len(train_data), generator=torch.Generator().manual_seed(seed * 1000 + epoch)
            )
            row = trainer.epoch(train_data, epoch, order, bar, r.epochs)
            if val_data is not None:
                row.update({f"val_{k}": v for k, v in evaluate(model, val_data, shard=True).items()})
                trainer.remember_best(row, keep_weights=bool(early_stopping))
            trainer.history.append(row)
            if on_epoch is not None and where.main:
                on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})
            if checkpoint_dir and where.main:
                save_checkpoint(checkpoint_dir, trainer.checkpoint(epoch))
            if early_stopping and val_data is not None and epoch - trainer.best.epoch >= early_stopping:
                stopped_early = True
                break
    if early_stopping and trainer.best.state is not None:
        model.load_state_dict(trainer.best.state)
    model.eval()
    if where.main and val_data is not None and trainer.history and spec.num_classes:
        say_if_it_learned_nothing(
            trainer.history[-1 if trainer.best.state is None else trainer.best.epoch], val_data
        )
    return {
        "epochs": trainer.history,
        "train_seconds": time.perf_counter() - t0,
        "device": str(where.device),
        "precision": where.precision,
        "resumed_from_epoch": trainer.start_epoch if ckpt is not None else None,
        "best_epoch": trainer.best.epoch,
        "stopped_early": stopped_early,
        "world_size": where.world_size,
        "privacy": trainer.private.report() if trainer.private is not None else None,
    }


def _check(model: Learner, train_data: LabeledData, val_data: LabeledData | None, r: Recipe) -> None:
    """Raise when the data do not fit the model or an option is out of range; note the pixel range."""
    check_data(model, train_data)
    # how a served image maps to inputs
    if "pixel_max" in train_data.meta:
        model.preprocess["pixel_max"] = train_data.meta["pixel_max"]
    if val_data is not None:
        check_data(model, val_data)
    if r.schedule not in SCHEDULES:
        raise InvalidInputError(f"schedule must be one of {', '.join(SCHEDULES)}, not {r.schedule!r}")
    if r.epochs < 1 or r.batch_size < 1 or r.lr <= 0:
        raise InvalidInputError(
            f"epochs, batch_size and lr must be positive (got {r.epochs}, {r.batch_size}, {r.lr})"
        )
    if not 0 <= r.warmup < 1:
        raise InvalidInputError(
            f"warmup is the share of the steps spent warming up, in [0, 1): not {r.warmup}"
        )


def _place(device: str, precision: str, is_text: bool) -> Placement:
    """Return this process's rank, device and precision (in a process group, its own GPU)."""
    rank, world_size = distributed.rank_and_size()
    dev = resolve_device(device)
    # setup() gave each local rank its own GPU
    if world_size > 1 and dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())
    return Placement(
        rank, world_size, dev, resolve_precision(precision, dev), dev.type == "cuda" and not is_text
    )


def _initialise(
    spec: Learner, train_data: LabeledData, val_data: LabeledData | None, seed: int, private: bool
) -> None:
    """Seed the weights (the same on every rank; each rank its own dropout) and fit the input statistics."""
    torch.manual_seed(seed)
    norm = spec.normalizer
    if norm is None or bool(norm.fitted):
        return
    # statistics of the private training split would leak it
    if private:
        private_dp.standardize(norm, train_data, val_data)
    else:
        assert train_data.features is not None
        norm.fit(train_data.features[:_NORMALIZE_ROWS])


def _trainer(
    model: nn.Module,
    spec: Learner,
    where: Placement,
    train_data: LabeledData,
    dp: DPConfig | None,
    r: Recipe,
    seed: int,
) -> Trainer:
    """Return the model on its device with its optimizer, schedule and grad scaler (and DP-SGD's wrapper)."""
    model.to(where.device)
    if where.channels_last:
        # torch's overloads of Module.to leave out memory_format, which it takes
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(
        model.parameters(), lr=r.lr, weight_decay=r.weight_decay
    )
    step_model, private = model, None
    # Opacus wraps the model and optimizer, and draws the batches: the loop stays the same
    if dp is not None:
        private = private_dp.PrivateTraining(
            dp,
            model,
            optimizer,
            examples=len(train_data),
            batch_size=r.batch_size,
            epochs=r.epochs,
            seed=seed,
        )
        step_model, optimizer = private.module, private.optimizer
        steps_per_epoch = private.steps_per_epoch()
    else:
        steps_per_epoch = math.ceil(math.ceil(len(train_data) / where.world_size) / r.batch_size)
    scheduler = _scheduler(r.schedule, optimizer, r.lr, r.epochs * steps_per_epoch, r.warmup)
    scaler = torch.amp.GradScaler(where.device.type, enabled=where.precision == "fp16")
    return Trainer(
        model, spec, where, optimizer, scheduler, scaler, private, r.batch_size, step_model=step_model
    )


def _wrap(step_model: nn.Module, where: Placement, *, compile: bool, is_text: bool) -> nn.Module:
    """Return the module the steps call: compiled if asked, under DDP in a process group."""
    if compile:
        # typed as any callable, torch.compile of a module is a module (an OptimizedModule)
        step_model = cast(nn.Module, torch.compile(step_model))
    # text encoders carry layers the loss never reaches (the pooler)
    if where.world_size > 1:
        device_ids = [where.device.index] if where.device.type == "cuda" else None
        step_model = DistributedDataParallel(
            step_model, device_ids=device_ids, find_unused_parameters=is_text
        )
    return step_model


def _progress_bar(show: bool) -> Progress:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f} · acc {task.fields[acc]:.3f} · {task.fields[rate]:,.0f} samples/s"
        ),
        TimeElapsedColumn(),
    )
    return Progress(*columns, disable=not show)
