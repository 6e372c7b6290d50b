"""The training loop (nanoGPT-style: no trainer framework) and evaluation.

`fit` is a recipe of named steps: check the options, place the model, restore a checkpoint or
initialise, build the optimizer (and DP-SGD's wrapper), then one epoch, an evaluation and a
checkpoint at a time. What happens to each epoch's figures (a registry run, a log) is the caller's:
it passes `on_epoch`."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import Learner, Tokens, as_inputs, batches, check_data
from lepton_ai.device import resolve_device, resolve_precision
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy import dp as private_dp
from lepton_ai.privacy.dp import DPConfig
from lepton_ai.train import distributed
from lepton_ai.train.checkpoint import load_checkpoint, save_checkpoint
from lepton_ai.train.recipe import SCHEDULES, SELECT_BY, Recipe, recipe_for, say_if_it_learned_nothing
from lepton_ai.train.trainer import (
    LossFn,
    Placement,
    Sampling,
    Trainer,
    balanced_weights,
    cross_entropy,
    scheduler,
)

# Rows of the training split that input standardisation looks at: enough for stable statistics.
_NORMALIZE_ROWS = 20000
SAMPLINGS = ("random", "balanced")

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
    idx, xs = torch.arange(rank, len(data), world_size), as_inputs(spec, data)
    # texts of like length together: little padding
    if isinstance(xs, Tokens):
        idx = idx[torch.argsort(xs.lengths[idx], descending=True, stable=True)]
    logits = torch.cat([model(x).float().cpu() for x in batches(spec, xs, batch_size, device, idx)])
    labels = data.labels[idx]
    pred, losses = logits.argmax(-1), nn.functional.cross_entropy(logits, labels, reduction="none")
    # each example is scored by one rank: the sum of the shares is the whole set
    if world_size > 1:
        both = torch.zeros(2, len(data), dtype=torch.float64)
        both[0, idx], both[1, idx] = pred.double(), losses.double()
        both = distributed.all_reduce_sum(both)
        pred, losses, labels = both[0].long(), both[1].float(), data.labels
    classes = list(range(spec.num_classes))
    f1 = f1_score(labels.numpy(), pred.numpy(), average="macro", labels=classes, zero_division=0)
    return {
        "accuracy": float((pred == labels).float().mean()),
        "loss": float(losses.mean()),
        "f1_macro": float(f1),
    }


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
    grad_accum: int | None = None,
    max_grad_norm: float | None = None,
    max_length: int | None = None,
    class_weights: str | Sequence[float] | None = None,
    sampling: str = "random",
    group_by_length: bool = True,
    select_by: str | None = None,
    early_stopping: int | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    loss_fn: LossFn | None = None,
    dp: DPConfig | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model` on `train_data`; return per-epoch history, the chosen epoch, time, device and precision.

    Options left as None take the model family's recipe (`lepton_ai.train.recipe`): a text transformer is
    fine-tuned with AdamW at lr 5e-5, 10 % linear warmup then linear decay, weight decay 0.01 and gradient
    clipping at 1.0, for 3 epochs of batch 16; a LoRA adapter the same at lr 2e-3 for 5 epochs; the built-in
    backbones train from scratch at lr 3e-3, cosine schedule, 10 epochs of batch 64. `max_grad_norm=0` turns
    clipping off; `grad_accum=N` adds up N batches' gradients per step. Texts are tokenised once per data set
    (cut at `max_length` tokens) and batched with others of like length, padded only to the batch's longest
    (`group_by_length=False`: batches in random order).

    Imbalanced classes: `class_weights="balanced"` (or one weight per class) weighs the loss, `sampling=
    "balanced"` draws each class equally often. With `val_data`, every epoch is scored on it and the best
    epoch's weights are kept at the end, best by `select_by` ("f1_macro" by default for a classifier,
    "accuracy", or "loss", the default of a head alone and of an embedding model); `early_stopping=N`
    stops after N epochs without a better one. A classifier that ends no better than always answering the
    most common validation class gets a `TrainingNotice`.

    With `checkpoint_dir` every epoch ends with an atomic checkpoint (model, optimizer,
    scheduler, grad scaler, RNG); `resume=True` continues from it.
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
        spec.family,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup=warmup,
        max_grad_norm=max_grad_norm,
        grad_accum=grad_accum,
        select_by=select_by,
    )
    private = DPConfig.of(dp)
    select = _check(
        spec, train_data, val_data, r, Options(max_length, class_weights, sampling, private, loss_fn)
    )
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
    trainer.max_grad_norm = None if private else r.max_grad_norm
    trainer.loss_fn = loss_fn or cross_entropy(_class_weights(class_weights, train_data))
    trainer.sampling, trainer.select_by = Sampling(sampling, group_by_length), select
    if ckpt is not None:
        trainer.restore(ckpt)
        # the other ranks must not repeat rank 0's dropout masks
        if where.rank:
            torch.manual_seed(seed * 1000 + trainer.start_epoch * 100 + where.rank)
    trainer.step_model = _wrap(trainer.step_model or model, where, compile=compile, is_text=spec.is_text)
    t0 = time.perf_counter()
    stopped_early = _run_epochs(
        trainer,
        train_data,
        val_data,
        r.epochs,
        seed,
        Hooks(progress, on_epoch, checkpoint_dir, early_stopping),
    )
    if trainer.best.state is not None:
        model.load_state_dict(trainer.best.state, strict=False)
    model.eval()
    if where.main and val_data is not None and trainer.history and spec.num_classes:
        say_if_it_learned_nothing(trainer.history[trainer.best.epoch], val_data)
    return {
        "epochs": trainer.history,
        "train_seconds": time.perf_counter() - t0,
        "device": str(where.device),
        "precision": where.precision,
        "resumed_from_epoch": trainer.start_epoch if ckpt is not None else None,
        "best_epoch": trainer.best.epoch,
        "selected_by": select if val_data is not None else None,
        "stopped_early": stopped_early,
        "world_size": where.world_size,
        "privacy": trainer.private.report() if trainer.private is not None else None,
    }


class Options(NamedTuple):
    """The options of a training that are checked together: how texts are cut, how imbalance is handled,
    DP-SGD and a replacement loss."""

    max_length: int | None
    class_weights: str | Sequence[float] | None
    sampling: str
    dp: DPConfig | None
    loss_fn: LossFn | None


class Hooks(NamedTuple):
    """What happens around the epochs: progress bar, the caller's callback, checkpoints, early stopping."""

    progress: bool
    on_epoch: EpochCallback | None
    checkpoint_dir: str | None
    early_stopping: int | None


def _run_epochs(
    trainer: Trainer,
    train_data: LabeledData,
    val_data: LabeledData | None,
    epochs: int,
    seed: int,
    hooks: Hooks,
) -> bool:
    """Train epoch by epoch, scoring, reporting and checkpointing each; return whether it stopped early."""
    where, xs = trainer.where, as_inputs(trainer.spec, train_data)
    with _progress_bar(hooks.progress and where.main) as bar, trainer.private or contextlib.nullcontext():
        for epoch in range(trainer.start_epoch, epochs):
            plan = trainer.plan(train_data, xs, epoch, seed)
            row = {"epoch": epoch, **trainer.epoch(train_data, xs, plan, bar, f"epoch {epoch + 1}/{epochs}")}
            if val_data is not None:
                row.update({f"val_{k}": v for k, v in evaluate(trainer.model, val_data, shard=True).items()})
                trainer.remember_best(row)
            trainer.history.append(row)
            if hooks.on_epoch is not None and where.main:
                hooks.on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})
            if hooks.checkpoint_dir and where.main:
                save_checkpoint(hooks.checkpoint_dir, trainer.checkpoint(epoch))
            if (
                hooks.early_stopping
                and val_data is not None
                and epoch - trainer.best.epoch >= hooks.early_stopping
            ):
                return True
    return False


def _check(
    model: Learner, train_data: LabeledData, val_data: LabeledData | None, r: Recipe, o: Options
) -> str:
    """Raise when the data do not fit the model or an option is out of range; note the pixel range and the
    texts' maximum length; return the figure that selects the kept epoch."""
    check_data(model, train_data)
    # how a served image maps to inputs
    if "pixel_max" in train_data.meta:
        model.preprocess["pixel_max"] = train_data.meta["pixel_max"]
    if o.max_length is not None:
        if not model.is_text or o.max_length < 2:
            raise InvalidInputError(
                f"max_length cuts texts into tokens: a text model and ≥ 2, not {o.max_length}"
            )
        model.preprocess["max_length"] = int(o.max_length)
    if val_data is not None:
        check_data(model, val_data)
    if r.schedule not in SCHEDULES:
        raise InvalidInputError(f"schedule must be one of {', '.join(SCHEDULES)}, not {r.schedule!r}")
    if r.epochs < 1 or r.batch_size < 1 or r.lr <= 0 or r.grad_accum < 1:
        raise InvalidInputError(
            "epochs, batch_size, lr and grad_accum must be positive "
            f"(got {r.epochs}, {r.batch_size}, {r.lr}, {r.grad_accum})"
        )
    if not 0 <= r.warmup < 1:
        raise InvalidInputError(
            f"warmup is the share of the steps spent warming up, in [0, 1): not {r.warmup}"
        )
    if o.sampling not in SAMPLINGS:
        raise InvalidInputError(f"sampling is one of {', '.join(SAMPLINGS)}, not {o.sampling!r}")
    if o.dp is not None and (o.class_weights is not None or o.sampling != "random" or r.grad_accum != 1):
        raise InvalidInputError(
            "DP-SGD draws its own batches and clips each example's gradient: train privately without "
            "class weights, balanced sampling or gradient accumulation"
        )
    if o.loss_fn is not None and o.class_weights is not None:
        raise InvalidInputError(
            "class_weights weigh the cross-entropy: with your own loss_fn, weigh it there"
        )
    select = r.select_by or ("f1_macro" if model.num_classes else "loss")
    if select not in SELECT_BY or (select != "loss" and not model.num_classes):
        raise InvalidInputError(
            f"select_by is one of {', '.join(SELECT_BY)} (loss for an embedding model), not {select!r}"
        )
    return select


def _class_weights(given: str | Sequence[float] | None, data: LabeledData) -> torch.Tensor | None:
    """Return the loss's per-class weights: none, scikit-learn's "balanced", or one given per class."""
    if given is None:
        return None
    if given == "balanced":
        return balanced_weights(data.labels, data.num_classes)
    if isinstance(given, str) or len(given) != data.num_classes or min(given) < 0:
        raise InvalidInputError(
            f"class_weights is 'balanced' or one weight ≥ 0 per class ({data.num_classes}: "
            f"{', '.join(data.classes)}), not {given!r}"
        )
    return torch.tensor([float(w) for w in given])


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
    # a LoRA adapter's base stays frozen: only what trains is the optimizer's
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(trainable, lr=r.lr, weight_decay=r.weight_decay)
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
    steps_per_epoch = math.ceil(steps_per_epoch / r.grad_accum)
    schedule = scheduler(r.schedule, optimizer, r.lr, r.epochs * steps_per_epoch, r.warmup)
    scaler = torch.amp.GradScaler(where.device.type, enabled=where.precision == "fp16")
    return Trainer(
        model,
        spec,
        where,
        optimizer,
        schedule,
        scaler,
        private,
        r.batch_size,
        grad_accum=r.grad_accum,
        step_model=step_model,
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
