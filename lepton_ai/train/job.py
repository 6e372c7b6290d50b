"""A whole training job: data splits → model → fit → test metrics → registry, recorded as a run.
`lepton train` and `lepton quickstart` are this function with different defaults. Under torchrun
every process runs it: they train data-parallel, and rank 0 alone records the run and the version."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lepton_ai import config
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy.defaults import DP_TRAINING_DEFAULTS
from lepton_ai.privacy.dp import DPConfig
from lepton_ai.train import distributed
from lepton_ai.train.loop import evaluate

if TYPE_CHECKING:
    from lepton_ai.data import LabeledData
    from lepton_ai.models import LeptonModel


@dataclass
class TrainResult:
    """What a training job produced: the registered reference and how it got there (ref and run_id
    are None on the ranks other than 0 of a data-parallel job: they register nothing)."""

    ref: str | None
    model: Any
    metrics: dict[str, float]
    history: dict[str, Any]
    run_id: int | None
    test_data: Any


def train_and_register(
    model: str,
    data: str,
    name: str,
    *,
    seed: int = 0,
    data_options: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    description: str | None = None,
    dp: DPConfig | dict[str, Any] | None = None,
    label_fraction: float | None = None,
    **fit_options: Any,
) -> TrainResult:
    """Train `model` (an architecture, HF dir or registry ref) on `data`, test it, register it as `name`.

    `dp={"epsilon": 3, "delta": 1e-5}` (or a DPConfig) trains with DP-SGD; the options not given then
    default to `DP_TRAINING_DEFAULTS` (epochs, batch size, learning rate tuned for DP), and the version's
    recipe records {"privacy": {"epsilon" spent, "delta", "mechanism", ...}}.
    `label_fraction` trains on a seeded, stratified share of the training labels (the same for any model).
    Started by torchrun (LOCAL_RANK set), it joins the process group and trains data-parallel."""
    from lepton_ai.store.refs import check_name

    check_name(name)
    dp = DPConfig.of(dp)
    if dp is not None:
        fit_options = {**DP_TRAINING_DEFAULTS, **fit_options, "dp": dp}
    joined = distributed.setup(fit_options.get("device", "auto"))
    try:
        return _train_and_register(
            model,
            data,
            name,
            seed=seed,
            data_options=data_options,
            checkpoint_dir=checkpoint_dir,
            description=description,
            label_fraction=label_fraction,
            **fit_options,
        )
    finally:
        if joined:
            distributed.teardown()


def _train_and_register(
    model: str,
    data: str,
    name: str,
    *,
    seed: int,
    data_options: dict[str, Any] | None,
    checkpoint_dir: str | Path | None,
    description: str | None,
    label_fraction: float | None,
    **fit_options: Any,
) -> TrainResult:
    from lepton_ai.data import load
    from lepton_ai.store import Registry

    train, val, test = (load(data, s, seed=seed, **(data_options or {})) for s in ("train", "val", "test"))
    if label_fraction is not None:
        train = train.labelled_share(label_fraction, seed)
    if train.num_classes < 2:
        raise InvalidInputError(
            f"the labels of {data} hold one class only ({', '.join(train.classes) or 'none'}): a classifier "
            "learns to tell at least two apart"
        )
    net = new_model(model, train, seed, lora=fit_options.get("lora") is not None)
    checkpoint_dir = str(checkpoint_dir or config.home() / "checkpoints" / name)
    world_size = distributed.rank_and_size()[1]
    # the other ranks of a data-parallel job train and test; rank 0 writes
    if not distributed.is_main():
        history = net.fit(train, val, seed=seed, checkpoint_dir=checkpoint_dir, **fit_options)
        return TrainResult(None, net, evaluate(net, test, shard=True), history, None, test)
    registry = Registry()
    # a registered dataset: the version it resolved to
    dataset = train.meta.get("dataset")
    params = {
        "model": model,
        "data": dataset or data,
        "seed": seed,
        **({"label_fraction": label_fraction} if label_fraction is not None else {}),
        **{k: v for k, v in fit_options.items() if k != "progress"},
    }
    if params.get("dp") is not None:
        params["dp"] = params["dp"].to_dict()
    if world_size > 1:
        params["world_size"] = world_size
    run = registry.start_run("train", params, name=name)
    try:
        history = net.fit(
            train,
            val,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            on_epoch=lambda epoch, figures: registry.log_metrics(run.id, figures, step=epoch),
            **fit_options,
        )
        metrics = evaluate(net, test, shard=True)
        registry.log_metrics(
            run.id, {f"test_{k}": v for k, v in metrics.items()}, step=len(history["epochs"])
        )
        ref = net.save(
            name,
            metrics={
                **metrics,
                "train_seconds": history["train_seconds"],
                "best_epoch": history["best_epoch"],
            },
            run_id=run.id,
            dataset=dataset,
            description=description or f"{model} trained on {dataset or data}",
            recipe=_recipe(history, net),
        )
    except BaseException as e:
        # the original error is the one to report
        with contextlib.suppress(Exception):
            registry.end_run(run.id, "cancelled" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    registry.end_run(run.id, "completed")
    return TrainResult(ref, net, metrics, history, run.id, test)


def new_model(model: str, train: LabeledData, seed: int, lora: bool = False) -> LeptonModel:
    """Return `model` (an architecture, HF dir or registry ref) sized for `train`'s classes and inputs, its
    fresh weights drawn from `seed`, ready to fit; a saved LoRA adapter stays one when `lora` trains it on."""
    from lepton_ai.models import LeptonModel

    # the same initial weights for the same seed
    torch.manual_seed(seed)
    net = LeptonModel(
        num_classes=train.num_classes, input_size=train.input_size or None, classes=train.classes
    )
    with warnings.catch_warnings():
        # a fresh architecture starts from random weights on purpose here
        warnings.simplefilter("ignore")
        # a saved LoRA adapter trains on as an adapter when --lora is given, else merged into its base
        net.load_pretrained_model(model, merge=not lora)
    return net


def _recipe(history: dict[str, Any], net: Any) -> dict[str, Any]:
    """Return what the registry records of how a version was trained: the method, the kept epoch, privacy."""
    recipe = {"method": history["method"], "best_epoch": history["best_epoch"]}
    recipe["selected_by"] = history["selected_by"]
    if net.lora is not None:
        recipe["lora"] = {**net.lora.to_dict(), "base": net.base}
    if history.get("privacy"):
        recipe["privacy"] = history["privacy"]
    return recipe
