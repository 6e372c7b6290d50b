"""The training loop (nanoGPT-style: no trainer framework), evaluation and batching."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lepton_ai.data import LabeledData
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy import dp as private_dp
from lepton_ai.privacy.dp import DPConfig
from lepton_ai.train import distributed
from lepton_ai.train.checkpoint import load_checkpoint, save_checkpoint

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SCHEDULES = ("cosine", "onecycle", "none")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "device='cuda' asked for but no CUDA GPU is visible; use device='cpu' or 'auto'"
        )
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return fp32, bf16 or fp16: "auto" is bf16 AMP on CUDA (fp16 where bf16 is missing), fp32 on CPU."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise InvalidInputError("fp16 training needs a CUDA GPU; on CPU use fp32 or bf16")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Return the autocast context for `precision` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def as_inputs(model: nn.Module, inputs: Any) -> torch.Tensor | list[str]:
    """Return model inputs from a data set, a tensor, an array, nested lists or strings."""
    if isinstance(inputs, LabeledData):
        return inputs.texts if inputs.texts is not None else inputs.features  # type: ignore[return-value]
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        return list(inputs)
    if getattr(model, "is_text", False):
        raise InvalidInputError("this is a text model: give it a list of strings")
    x = (
        torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        if not isinstance(inputs, torch.Tensor)
        else inputs.float()
    )
    expected = tuple(getattr(model, "input_size", ()) or ())
    if expected and tuple(x.shape[1:]) != expected:
        if tuple(x.shape) == expected:
            x = x.unsqueeze(0)
        else:
            raise InvalidInputError(
                f"inputs of shape {tuple(x.shape[1:])} do not fit the model's input_size {expected}"
            )
    return x


def batches(
    model: nn.Module,
    xs: torch.Tensor | list[str],
    batch_size: int,
    device: torch.device,
    order: torch.Tensor | None = None,
    channels_last: bool = False,
) -> Iterator[Any]:
    """Yield device-ready batches of `xs` (tokenised for text models), in `order` (all or some indices) if given."""
    order = torch.arange(len(xs)) if order is None else order
    for start in range(0, len(order), batch_size):
        yield take(model, xs, order[start : start + batch_size], device, channels_last)


def take(
    model: nn.Module,
    xs: torch.Tensor | list[str],
    idx: torch.Tensor,
    device: torch.device,
    channels_last: bool = False,
) -> Any:
    """Return the examples of `xs` at `idx` as one device-ready batch (tokenised for text models)."""
    if isinstance(xs, list):
        return model.net.tokenize([xs[i] for i in idx.tolist()], device)  # type: ignore[union-attr]
    x = xs[idx].to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def check_data(model: nn.Module, data: LabeledData) -> None:
    """Raise, naming both sides, when `data` does not fit `model` (classes, input shape, kind)."""
    if not isinstance(data, LabeledData):
        raise InvalidInputError(f"expected a data set from lepton_ai.data.load(), got {type(data).__name__}")
    if data.num_classes != model.num_classes:
        raise InvalidInputError(
            f"the data has {data.num_classes} classes ({data.name}) but the model was built "
            f"with num_classes={model.num_classes}"
        )
    if model.is_text != (data.kind == "text"):
        raise InvalidInputError(
            f"the model takes {'text' if model.is_text else 'tensors'} but {data.name} is {data.kind} data"
        )
    if not model.is_text and tuple(data.input_size) != tuple(model.input_size):
        raise InvalidInputError(
            f"the data's examples have shape {tuple(data.input_size)} but the model was built "
            f"with input_size={tuple(model.input_size)}"
        )


@torch.no_grad()
def evaluate(
    model: nn.Module, data: LabeledData, batch_size: int = 256, shard: bool = False
) -> dict[str, float]:
    """Return accuracy, mean cross-entropy loss and macro F1 of `model` on `data`.

    `shard=True` in a process group (call it on every rank): each rank scores every world_size-th
    example and the ranks add up their shares, so every rank returns the figures of the whole set."""
    from sklearn.metrics import f1_score

    check_data(model, data)
    model.eval()
    device = next(model.parameters()).device
    rank, world_size = distributed.rank_and_size() if shard else (0, 1)
    idx = torch.arange(rank, len(data), world_size)
    logits = torch.cat(
        [model(x).float().cpu() for x in batches(model, as_inputs(model, data), batch_size, device, idx)]
    )
    labels = data.labels
    pred, losses = logits.argmax(-1), nn.functional.cross_entropy(logits, labels[idx], reduction="none")
    # each example is scored by one rank: the sum of the shares is the whole set
    if world_size > 1:
        both = torch.zeros(2, len(data), dtype=torch.float64)
        both[0, idx], both[1, idx] = pred.double(), losses.double()
        both = distributed.all_reduce_sum(both)
        pred, losses = both[0].long(), both[1].float()
    return {
        "accuracy": float((pred == labels).float().mean()),
        "loss": float(losses.mean()),
        "f1_macro": float(
            f1_score(
                labels.numpy(),
                pred.numpy(),
                average="macro",
                labels=list(range(model.num_classes)),
                zero_division=0,
            )
        ),
    }


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, _inputs: Any) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels)


def _scheduler(name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int):  # type: ignore[no-untyped-def]
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def fit(
    model: nn.Module,
    train_data: LabeledData,
    val_data: LabeledData | None = None,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    device: str = "auto",
    precision: str = "auto",
    schedule: str = "cosine",
    early_stopping: int | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
    run_id: int | None = None,
    max_grad_norm: float | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None = None,
    dp: DPConfig | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model` on `train_data`; return per-epoch history, time, device and precision.

    With `checkpoint_dir` every epoch ends with an atomic checkpoint (model, optimizer,
    scheduler, grad scaler, RNG); `resume=True` continues from it. `early_stopping=N` stops
    after N epochs without a better validation loss and restores the best weights.
    `loss_fn(logits, labels, inputs)` replaces cross-entropy (distillation uses it).

    `dp=DPConfig(epsilon, delta, max_grad_norm)` (or the same as a dict) trains with DP-SGD through
    Opacus (`lepton_ai.privacy.dp`): layers it cannot train are replaced (BatchNorm → GroupNorm), each
    epoch is `steps` Poisson-sampled batches of expected size `batch_size`, and the history's
    "privacy" block states the ε spent (None without dp).

    Inside a process group (`distributed.setup()` under torchrun) it trains data-parallel: each rank
    takes its shard of every epoch's permutation, DDP averages the gradients, the figures are summed
    over ranks, and only rank 0 logs metrics and writes checkpoints. `batch_size` is per process."""
    check_data(model, train_data)
    # how a served image maps to inputs
    if "pixel_max" in train_data.meta and hasattr(model, "preprocess"):
        model.preprocess["pixel_max"] = train_data.meta["pixel_max"]
    if val_data is not None:
        check_data(model, val_data)
    if schedule not in SCHEDULES:
        raise InvalidInputError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise InvalidInputError(
            f"epochs, batch_size and lr must be positive (got {epochs}, {batch_size}, {lr})"
        )
    rank, world_size = distributed.rank_and_size()
    main = rank == 0
    dev = resolve_device(device)
    if world_size > 1 and dev.type == "cuda":
        # setup() gave each local rank its own GPU
        dev = torch.device("cuda", torch.cuda.current_device())
    dp = DPConfig.of(dp)
    if dp is not None:
        private_dp.check_options(
            world_size=world_size, compile=compile, precision=precision, max_grad_norm=max_grad_norm
        )
        private_dp.make_compatible(model)
    prec = resolve_precision("fp32" if dp is not None else precision, dev)
    channels_last = dev.type == "cuda" and not model.is_text
    ckpt = load_checkpoint(checkpoint_dir) if (checkpoint_dir and resume and main) else None
    # rank 0's: the other machines may not share its disk
    ckpt = distributed.broadcast_object(ckpt)
    if ckpt is None:
        # the same weights (DDP copies rank 0's anyway), each rank its own dropout
        torch.manual_seed(seed + rank)
        norm = getattr(model.net, "normalize", None)
        if norm is not None and not bool(norm.fitted):
            # statistics of the private training split would leak it
            if dp is not None:
                private_dp.standardize(norm, train_data, val_data)
            else:
                norm.fit(train_data.features[:20000])  # type: ignore[index]
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    step_model: nn.Module = model
    private = None
    # Opacus wraps the model and optimizer, and draws the batches: the loop stays the same
    if dp is not None:
        private = private_dp.PrivateTraining(
            dp, model, optimizer, examples=len(train_data), batch_size=batch_size, epochs=epochs, seed=seed
        )
        step_model, optimizer = private.module, private.optimizer
    steps_per_epoch = (
        private.steps_per_epoch()
        if private is not None
        else math.ceil(math.ceil(len(train_data) / world_size) / batch_size)
    )
    scheduler = _scheduler(schedule, optimizer, lr, epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(dev.type, enabled=prec == "fp16")
    history: list[dict[str, float]] = []
    best = {"val_loss": math.inf, "epoch": -1, "state": None}
    start_epoch = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"])
        if dev.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], dev)
        history, best, start_epoch = ckpt["history"], ckpt["best"], ckpt["epoch"] + 1
        if private is not None or ckpt.get("privacy"):
            if private is None:
                raise InvalidInputError(
                    "the checkpoint was written by a private (dp) run: resume it with the same dp "
                    "options, or start afresh without --resume"
                )
            private.load_state_dict(ckpt.get("privacy"))
        if rank:
            # not rank 0's dropout masks
            torch.manual_seed(seed * 1000 + start_epoch * 100 + rank)
    if compile:
        step_model = torch.compile(model)
    # text encoders carry layers the loss never reaches (the pooler)
    if world_size > 1:
        step_model = DistributedDataParallel(
            step_model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=model.is_text,
        )
    xs, labels = as_inputs(model, train_data), train_data.labels
    registry = None
    if run_id is not None and main:
        from lepton_ai.store import Registry

        registry = Registry()
    t0 = time.perf_counter()
    stopped_early = False
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f} · acc {task.fields[acc]:.3f} · {task.fields[rate]:,.0f} samples/s"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not (progress and main)) as bar, private or contextlib.nullcontext():
        for epoch in range(start_epoch, epochs):
            model.train()
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            # the same permutation on every rank, split
            order = distributed.shard(order, rank, world_size)
            plan = private.epoch_batches(epoch) if private is not None else order.split(batch_size)
            task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=len(plan), loss=0.0, acc=0.0, rate=0.0)
            e0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            for idx in plan:
                x, y = take(model, xs, idx, dev, channels_last), labels[idx].to(dev, non_blocking=True)
                with autocast(dev, prec):
                    logits = step_model(x)
                    loss = (loss_fn or _cross_entropy)(logits.float(), y, x)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if max_grad_norm:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                seen += len(y)
                # a Poisson batch may be empty
                loss_sum += float(loss.detach()) * len(y) if len(y) else 0.0
                # embedding models (distillation) have no classes
                if model.num_classes:
                    correct += int((logits.argmax(-1) == y).sum())
                bar.update(
                    task,
                    advance=1,
                    loss=loss_sum / max(seen, 1),
                    acc=correct / max(seen, 1),
                    rate=seen * world_size / (time.perf_counter() - e0),
                )
            # every rank's share of the epoch, added up: rank 0 reports the global figures
            if world_size > 1:
                seen, loss_sum, correct = distributed.all_reduce_sum(
                    torch.tensor([seen, loss_sum, correct], dtype=torch.float64)
                ).tolist()
                distributed.sync_buffers(model)
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "seconds": time.perf_counter() - e0,
                "samples_per_s": seen / (time.perf_counter() - e0),
                "lr": scheduler.get_last_lr()[0],
            }
            if val_data is not None:
                row.update({f"val_{k}": v for k, v in evaluate(model, val_data, shard=True).items()})
                if row["val_loss"] < best["val_loss"]:
                    best = {
                        "val_loss": row["val_loss"],
                        "epoch": epoch,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                        if early_stopping
                        else None,
                    }
            history.append(row)
            if registry is not None:
                registry.log_metrics(run_id, {k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            if checkpoint_dir and main:
                state = {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "history": history,
                    "best": best,
                }
                if dev.type == "cuda":
                    state["cuda_rng"] = torch.cuda.get_rng_state(dev)
                if private is not None:
                    state["privacy"] = private.state_dict()
                save_checkpoint(checkpoint_dir, state)
            if early_stopping and val_data is not None and epoch - best["epoch"] >= early_stopping:
                stopped_early = True
                break
    if early_stopping and best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return {
        "epochs": history,
        "train_seconds": time.perf_counter() - t0,
        "device": str(dev),
        "precision": prec,
        "resumed_from_epoch": start_epoch if ckpt is not None else None,
        "best_epoch": best["epoch"],
        "stopped_early": stopped_early,
        "world_size": world_size,
        "privacy": private.report() if private is not None else None,
    }
