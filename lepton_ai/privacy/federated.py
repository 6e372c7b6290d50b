"""Federated learning simulated on one machine, and the client side every federation shares.

`federated_train` runs a whole federation in this process: clients train one after the other on one
model object (`local_train`: a few epochs of SGD with momentum from the global weights on the client's
data, with FedProx's proximal term μ/2‖w − w_global‖² when asked), the server combines their updates
(`lepton_ai.privacy.aggregation`), the global model is tested after every round and the final one
registered (`lepton_ai.privacy.record`). `prepare` checks and builds what a run starts from, for the
simulation and for the Flower server (`lepton_ai.privacy.flower`) alike.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lepton_ai.data import LabeledData
from lepton_ai.device import torch_threads
from lepton_ai.errors import InvalidInputError
from lepton_ai.models import LeptonModel
from lepton_ai.privacy.aggregation import ClientDP, Strategy, aggregate, finite, parse_strategy, weight_keys
from lepton_ai.privacy.defaults import FEDERATED_DEFAULTS
from lepton_ai.privacy.record import FederatedResult, RunRecord, default_name, run_params


def default_model(data: LabeledData, dp: ClientDP | None = None) -> str:
    """Return the architecture a run uses when none is named: cnn-small for images, mlp otherwise and
    under client-level DP (whose noise would corrupt BatchNorm's running statistics)."""
    return "cnn-small" if data.kind == "image" and dp is None else "mlp"


def check_dp_model(model: LeptonModel, dp: ClientDP | None) -> None:
    """Refuse a model with BatchNorm under client-level DP: its running statistics, computed from the clients'
    data, cannot be shared without noise of their own, and the model is wrong without them."""
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if dp is not None and norms:
        raise InvalidInputError(
            f"client-level DP needs a model without BatchNorm ({getattr(model, 'arch', None)} has "
            f"{len(norms)}, e.g. {norms[0]}): use mlp"
        )


# -- the client side ----------------------------------------------------------------------------


def default_schedule(schedule: str | None, dp: ClientDP | None) -> str:
    """Return `schedule` checked, or the default: "cosine", but "none" under client-level DP (the noise
    does not shrink with the learning rate, so late rounds of small updates would be mostly noise)."""
    schedule = schedule or ("none" if dp is not None else FEDERATED_DEFAULTS["schedule"])
    round_lr(1.0, 0, 1, schedule)
    return schedule


def round_lr(lr: float, round_index: int, rounds: int, schedule: str = "cosine") -> float:
    """Return the clients' learning rate in round `round_index` (0-based): `lr` throughout ("none"), or
    decayed from `lr` along a half cosine over the run ("cosine"), which settles the global model."""
    if schedule not in ("cosine", "none"):
        raise InvalidInputError(f"schedule must be cosine or none, not {schedule!r}")
    return lr if schedule == "none" else lr * 0.5 * (1 + math.cos(math.pi * round_index / rounds))


def local_train(
    model: LeptonModel,
    data: LabeledData,
    global_state: Mapping[str, torch.Tensor],
    *,
    epochs: int = 1,
    lr: float = FEDERATED_DEFAULTS["lr"],
    batch_size: int = FEDERATED_DEFAULTS["batch_size"],
    mu: float = 0.0,
    momentum: float = FEDERATED_DEFAULTS["momentum"],
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], int, dict[str, float]]:
    """Train `model` from `global_state` on one client's `data` with SGD (plus FedProx's μ/2‖w − w_global‖²
    when mu > 0); return its new state, its number of examples and its mean training loss.

    A few lines of plain local SGD rather than `fit`: federated clients train a few steps each from
    a fresh start every round, and SGD's steps, unlike Adam's, stay small for the classes a client lacks."""
    from lepton_ai.data.inputs import as_inputs, take

    dev = torch.device(device)
    model.load_state_dict(global_state)
    model.to(dev).train()
    anchors = [(p, global_state[k].to(dev)) for k, p in model.named_parameters()] if mu > 0 else []
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    xs, labels = as_inputs(model, data), data.labels
    generator = torch.Generator().manual_seed(seed)
    # dropout
    torch.manual_seed(seed)
    total, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for idx in order.split(batch_size):
            y = labels[idx].to(dev)
            loss = nn.functional.cross_entropy(model(take(model, xs, idx, dev)), y)
            if anchors:
                loss = loss + mu / 2 * sum(((p - g) ** 2).sum() for p, g in anchors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(y), seen + len(y)
    model.eval()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return state, len(data), {"train_loss": total / max(seen, 1)}


@contextlib.contextmanager
def cpu_threads(model: nn.Module, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run clients' training of a small model (< 1M parameters) on one CPU thread: their steps are too
    small to split, and OpenMP threads spinning against other work slow them several times over on a busy
    machine."""
    small = sum(p.numel() for p in model.parameters()) < 1_000_000 and torch.device(device).type == "cpu"
    with torch_threads(1 if small else torch.get_num_threads()):
        yield


# -- building the model -------------------------------------------------------------------------


def build_model(model: str | LeptonModel, train: LabeledData, val: LabeledData | None = None) -> LeptonModel:
    """Return the global model: a LeptonModel as given, or one built from an architecture name or
    registry reference for `train`'s classes and input size, its input standardisation set without
    pooling the clients' data (pixels 0..pixel_max map to -1..1; else the server's validation split)."""
    from lepton_ai.privacy.dp import PrivacyNotice, standardize

    if isinstance(model, LeptonModel):
        net = model
    else:
        net = LeptonModel(
            num_classes=train.num_classes, input_size=train.input_size or None, classes=train.classes
        )
        with warnings.catch_warnings():
            # a fresh architecture starts from random weights on purpose
            warnings.simplefilter("ignore")
            net.load_pretrained_model(model)
    if getattr(net, "net", None) is None:
        raise InvalidInputError("the model has no backbone yet: call load_pretrained_model() first")
    pixel_max = train.meta.get("pixel_max")
    if pixel_max and hasattr(net, "preprocess"):
        net.preprocess["pixel_max"] = pixel_max
    norm = getattr(net.net, "normalize", None)
    if norm is not None and not bool(norm.fitted):
        with warnings.catch_warnings():
            # the docstring says where the statistics come from
            warnings.simplefilter("ignore", PrivacyNotice)
            standardize(norm, train, val, spread=2.0)
    return net


def load_splits(
    data: str | LabeledData, seed: int = 0, test_data: LabeledData | None = None
) -> tuple[LabeledData, LabeledData | None, LabeledData]:
    """Return (train, val, test): the named data set's splits, or `data` itself split the same way."""
    from lepton_ai.data import load
    from lepton_ai.data.datasets import split_indices

    if isinstance(data, LabeledData):
        if test_data is not None:
            return data, None, test_data
        idx = split_indices(data.labels.numpy(), seed)
        return (
            data.subset(idx["train"], "[train]"),
            data.subset(idx["val"], "[val]"),
            data.subset(idx["test"], "[test]"),
        )
    if not isinstance(data, (str, Path)):
        raise InvalidInputError(
            f"data must be a data set name, a path or a LabeledData, not {type(data).__name__}"
        )
    train, val, test = (load(data, s, seed=seed) for s in ("train", "val", "test"))
    return train, val, test if test_data is None else test_data


# -- a run ----------------------------------------------------------------------------------------


def check_run(
    clients: int, rounds: int, fraction: float, local_epochs: int, lr: float, batch_size: int
) -> None:
    """Raise, in one line, on a count, rate or fraction out of range."""
    for key, value in (
        ("clients", clients),
        ("rounds", rounds),
        ("local_epochs", local_epochs),
        ("batch_size", batch_size),
    ):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InvalidInputError(f"{key} must be a whole number ≥ 1, got {value!r}")
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"fraction (of clients sampled per round) must be in (0, 1], got {fraction}")
    if not lr > 0:
        raise InvalidInputError(f"lr must be > 0, got {lr}")


def check_strategy_dp(plan: Strategy, dp: ClientDP | None) -> None:
    """Refuse a strategy that client-level DP cannot be combined with."""
    if dp is not None and plan.trim:
        raise InvalidInputError(
            "a trimmed mean cannot be combined with client-level DP (the noise is calibrated "
            "to a clipped sum): use fedavg, fedprox, fedavgm or fedadam"
        )


@dataclass
class Setup:
    """What a federated run starts from, checked: its strategy, client-level DP (calibrated), client lr
    schedule, data splits, and the global model (with the keys of its trainable weights) on `device`."""

    model: str | LeptonModel
    data: str | LabeledData
    strategy: Strategy
    dp: ClientDP | None
    schedule: str
    train: LabeledData
    val: LabeledData | None
    test: LabeledData
    net: LeptonModel
    weights: list[str]
    device: torch.device
    options: dict[str, Any]

    def params(self, **extra: Any) -> dict[str, Any]:
        """Return the run's parameters as the registry records them."""
        return run_params(
            self.model,
            self.data,
            **self.options,
            strategy=self.strategy.name,
            schedule=self.schedule,
            dp=None if self.dp is None else asdict(self.dp),
            **extra,
        )


def prepare(
    model: str | LeptonModel | None,
    data: str | LabeledData,
    *,
    clients: int,
    rounds: int,
    fraction: float,
    local_epochs: int,
    lr: float,
    batch_size: int,
    strategy: str | Strategy,
    schedule: str | None,
    dp: ClientDP | Mapping[str, Any] | None,
    seed: int,
    test_data: LabeledData | None = None,
    device: str = "cpu",
) -> Setup:
    """Check a run's options (one-line errors, before anything is registered), load the data, build the
    global model (the same initial weights for the same seed) and calibrate DP to sample rate `fraction`."""
    from lepton_ai.data.inputs import check_data
    from lepton_ai.device import resolve_device

    check_run(clients, rounds, fraction, local_epochs, lr, batch_size)
    plan, private = parse_strategy(strategy), ClientDP.of(dp)
    schedule = default_schedule(schedule, private)
    check_strategy_dp(plan, private)
    dev = resolve_device(device)
    train, val, test = load_splits(data, seed, test_data)
    model = model or default_model(train, private)
    torch.manual_seed(seed)
    net = build_model(model, train, val)
    check_dp_model(net, private)
    check_data(net, train)
    check_data(net, test)
    net.to(dev)
    if private is not None:
        private = private.calibrate(fraction, rounds)
    options = {
        "clients": clients,
        "rounds": rounds,
        "fraction": fraction,
        "local_epochs": local_epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
    }
    return Setup(model, data, plan, private, schedule, train, val, test, net, weight_keys(net), dev, options)


# -- the simulation -----------------------------------------------------------------------------


def federated_train(
    model: str | LeptonModel | None = None,
    data: str | LabeledData = "digits",
    *,
    clients: int = 10,
    rounds: int = 30,
    partition: str = "iid",
    strategy: str | Strategy = FEDERATED_DEFAULTS["strategy"],
    fraction: float = 1.0,
    local_epochs: int = FEDERATED_DEFAULTS["local_epochs"],
    lr: float = FEDERATED_DEFAULTS["lr"],
    batch_size: int = FEDERATED_DEFAULTS["batch_size"],
    schedule: str | None = None,
    dp: ClientDP | Mapping[str, Any] | None = None,
    seed: int = 0,
    name: str | None = None,
    test_data: LabeledData | None = None,
    report_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    description: str | None = None,
) -> FederatedResult:
    """Simulate federated training of `model` (default: cnn-small for images, else mlp) on `data` split
    among `clients` by `partition`, on this machine: the clients train one after the other on one model
    object; the global model is tested after every round; the report (JSON, PNG) is written and the
    final model registered as `name` (default fl-MODEL-DATA). `dp={"epsilon": 8, "delta": 1e-5,
    "clip": 1.0}` makes it client-level differentially private."""
    from lepton_ai.privacy.partition import partition as split

    run = prepare(
        model,
        data,
        clients=clients,
        rounds=rounds,
        fraction=fraction,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        strategy=strategy,
        schedule=schedule,
        dp=dp,
        seed=seed,
        test_data=test_data,
        device=device,
    )
    parts = split(run.train, partition, clients, seed)
    net, private = run.net, run.dp
    rng, noise = np.random.default_rng(seed), torch.Generator().manual_seed(seed + 1)
    # under client-level DP the sum is divided by the expected, public number of clients per round
    combine = partial(
        aggregate, run.strategy, weights=run.weights, dp=private, expected_clients=fraction * clients
    )
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    with (
        RunRecord(
            name or default_name(run.model, data), run.params(partition=partition), report_dir
        ) as record,
        _progress(progress) as bar,
        cpu_threads(net, run.device),
    ):
        task = bar.add_task("rounds", total=rounds, acc=0.0, loss=0.0)
        for r in range(rounds):
            r0 = time.perf_counter()
            chosen = _clients_of_round(rng, clients, fraction, poisson=private is not None)
            results, dropped = finite(_local_updates(run, [parts[c] for c in chosen], chosen, state, r, bar))
            state = combine(state, results, generator=noise)
            net.load_state_dict(state)
            extra = {"epsilon": private.epsilon_spent(fraction, r + 1)} if private is not None else {}
            row = record.log_round(
                net,
                run.test,
                clients=len(results),
                failures=dropped,
                examples=sum(n for _, n in results),
                seconds=time.perf_counter() - r0,
                **extra,
            )
            bar.update(task, advance=1, acc=row["accuracy"], loss=row["loss"])
        privacy = private.report(fraction, rounds) if private is not None else None
        return record.finish(net, clients, privacy, description)


def _clients_of_round(rng: np.random.Generator, clients: int, fraction: float, poisson: bool) -> list[int]:
    """Return the clients that train in a round: each with probability `fraction` when `poisson` (as
    client-level DP accounts for), else a fixed share of them drawn without replacement."""
    if poisson:
        return np.flatnonzero(rng.random(clients) < fraction).tolist()
    return np.sort(rng.choice(clients, max(1, round(fraction * clients)), replace=False)).tolist()


def _local_updates(
    run: Setup, parts: list[LabeledData], ids: list[int], state: dict[str, torch.Tensor], r: int, bar: Any
) -> list[tuple[dict[str, torch.Tensor], int]]:
    """Return each client's new weights (trained from `state` on its part in round `r`) and example count."""
    o = run.options
    task = bar.add_task(f"round {r + 1}/{o['rounds']}", total=len(ids), acc=0.0, loss=0.0)
    results = []
    for part, c in zip(parts, ids):
        new, n, _ = local_train(
            run.net,
            part,
            state,
            epochs=o["local_epochs"],
            lr=round_lr(o["lr"], r, o["rounds"], run.schedule),
            batch_size=o["batch_size"],
            mu=run.strategy.mu,
            seed=o["seed"] * 1_000_003 + r * 10_007 + c,
            device=run.device,
        )
        results.append((new, n))
        bar.advance(task)
    bar.remove_task(task)
    return results


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("test acc {task.fields[acc]:.3f} · loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        disable=not enabled,
    ) as bar:
        yield bar
