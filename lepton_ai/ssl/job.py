"""A whole pretraining job: data → backbone → pretrain → registry, recorded as a run whose every epoch logs
its loss, kNN accuracy and collapse signals. Under torchrun every process runs it; rank 0 alone records."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lepton_ai import config
from lepton_ai.errors import InvalidInputError
from lepton_ai.train import distributed


@dataclass
class PretrainResult:
    """What a pretraining produced: the registered backbone (None on ranks other than 0), its history, and
    the run that recorded it."""

    ref: str | None
    model: Any
    history: dict[str, Any]
    run_id: int | None


def pretrain_and_register(
    model: str,
    data: str,
    name: str,
    *,
    method: str = "vicreg",
    seed: int = 0,
    data_options: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    **options: Any,
) -> PretrainResult:
    """Pretrain `model` (mlp, cnn-small, resnet18 or a registered backbone) on `data` without its labels by
    `method`, and register the backbone as `name`; started by torchrun, the ranks train data-parallel."""
    from lepton_ai.store.refs import check_name

    check_name(name)
    joined = distributed.setup(options.get("device", "auto"))
    try:
        return _pretrain_and_register(model, data, name, method, seed, data_options, checkpoint_dir, options)
    finally:
        if joined:
            distributed.teardown()


def _pretrain_and_register(
    model: str,
    data: str,
    name: str,
    method: str,
    seed: int,
    data_options: dict[str, Any] | None,
    checkpoint_dir: str | Path | None,
    options: dict[str, Any],
) -> PretrainResult:
    from lepton_ai.data import load
    from lepton_ai.models import LeptonModel
    from lepton_ai.ssl.pretraining import pretrain
    from lepton_ai.store import Registry

    train, val = (load(data, s, seed=seed, **(data_options or {})) for s in ("train", "val"))
    if not train.input_size:
        raise InvalidInputError(f"{data} is text: pretraining here takes images or tables")
    torch.manual_seed(seed)
    net = LeptonModel(num_classes=0, input_size=train.input_size)
    with warnings.catch_warnings():
        # a fresh architecture starts from random weights on purpose here
        warnings.simplefilter("ignore", UserWarning)
        net.load_pretrained_model(model)
    checkpoint_dir = str(checkpoint_dir or config.home() / "checkpoints" / name)
    if not distributed.is_main():
        history = pretrain(
            net, train, method, val_data=val, seed=seed, checkpoint_dir=checkpoint_dir, **options
        )
        return PretrainResult(None, net, history, None)
    registry = Registry()
    dataset = train.meta.get("dataset")
    params = {"model": model, "data": dataset or data, "method": method, "seed": seed, **options}
    params.pop("progress", None)
    run = registry.start_run("pretrain", params, name=name)
    try:
        history = pretrain(
            net,
            train,
            method,
            val_data=val,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            on_epoch=lambda epoch, figures: registry.log_metrics(run.id, figures, step=epoch),
            **options,
        )
        last = history["epochs"][-1]
        ref = net.save(
            name,
            metrics={**last, "pretrain_seconds": history["pretrain_seconds"]},
            run_id=run.id,
            dataset=dataset,
            description=f"{model} pretrained by {method} on {dataset or data} (no labels)",
            recipe=_recipe(history),
        )
    except BaseException as e:
        with contextlib.suppress(Exception):
            registry.end_run(run.id, "cancelled" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    registry.end_run(run.id, "completed")
    return PretrainResult(ref, net, history, run.id)


def _recipe(history: dict[str, Any]) -> dict[str, Any]:
    """Return what the registry records of how a backbone was pretrained."""
    o = history["options"]
    return {
        "method": f"self-supervised ({history['method']})",
        "pretraining": {
            "method": history["method"],
            "epochs": o["epochs"],
            "batch_size": o["batch_size"],
            "lr": o["lr"],
            "temperature": o["temperature"] if history["method"] == "simclr" else None,
            "views": history["views"],
            "world_size": history["world_size"],
        },
    }
