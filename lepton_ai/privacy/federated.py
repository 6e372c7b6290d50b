"""Federated learning: strategies, client-level differential privacy, and a simulation on one machine.

The pieces a federated round is made of live here once and serve both the simulation
(`federated_train`: clients run one after the other in this process, on one model object) and the
real deployment over the network (`lepton_ai.privacy.flower`):

- the client side, `local_train`: a few epochs of SGD with momentum from the global weights on the
  client's data (the training loop's batching), with FedProx's proximal term μ/2‖w − w_global‖²
  added to the loss when asked;
- the server side, `aggregate`: the clients' updates Δ = w_client − w_global (all floating-point
  weights and buffers, one flat vector each) are combined — sample-weighted mean (FedAvg, FedProx),
  coordinate-wise trimmed mean (robust to a few poisoned clients) or, under client-level DP, the
  clipped sum plus Gaussian noise over a fixed denominator — and applied by the server optimiser
  (plain step, momentum for FedAvgM, Adam for FedAdam).

Client-level DP is DP-FedAvg (McMahan et al. 2018): each round samples each client independently
with probability q = fraction (Poisson, as the accountant assumes), clips each update to norm C, adds
N(0, σ²C²) to the sum and divides by the expected number of clients qN; Opacus's RDP accountant
turns (σ, q, rounds) into the ε spent, and calibrates σ to a target ε. It protects whole clients
(all of one client's data), not single examples.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lepton_ai.data import LabeledData
from lepton_ai.errors import InvalidInputError

MECHANISM = "client-level DP-FedAvg (Gaussian, RDP accountant)"
STRATEGIES = "fedavg, fedprox[:MU], fedavgm[:BETA], fedadam[:LR] or trimmed[:BETA]"
DEFAULT_CLIP = 1.0

# What `federated_train`, `lepton fl run` and `lepton fl server` use unless told otherwise, tuned on digits
# with 10 clients, Dirichlet α=0.1 (benchmarks/privacy.py): cnn-small for images (mlp otherwise), clients
# running 2 epochs of SGD with momentum (Adam's per-weight steps push down the classes a client lacks)
# at a learning rate decayed along a cosine over the rounds, which settles the global model at the end.
DEFAULTS: dict[str, Any] = {"strategy": "fedavg", "local_epochs": 2, "lr": 0.05, "momentum": 0.9, "batch_size": 32,
                            "schedule": "cosine"}


def default_model(data: LabeledData, dp: ClientDP | None = None) -> str:
    """Return the architecture a run uses when none is named: cnn-small for images, mlp otherwise and
    under client-level DP (whose noise would corrupt BatchNorm's running statistics)."""
    return "cnn-small" if data.kind == "image" and dp is None else "mlp"


def check_dp_model(model: nn.Module, dp: ClientDP | None) -> None:
    """Refuse a model with BatchNorm under client-level DP: its running statistics travel in the update,
    and the noise added to them (a variance can turn negative) breaks the model."""
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if dp is not None and norms:
        raise InvalidInputError(f"client-level DP needs a model without BatchNorm ({getattr(model, 'arch', None)} has "
                                f"{len(norms)}, e.g. {norms[0]}): use mlp")


# -- strategies ---------------------------------------------------------------------------------


@dataclass
class Strategy:
    """How clients train (FedProx's μ) and how the server turns their updates into the next global
    model (mean or trimmed mean, then a plain, momentum or Adam step). Holds the server optimiser's
    state between rounds."""

    name: str = "fedavg"
    mu: float = 0.0  # FedProx: weight of the proximal term in each client's loss
    trim: float = 0.0  # trimmed mean: fraction cut at each end of every coordinate
    server_lr: float = 1.0
    momentum: float = 0.0  # FedAvgM (Hsu et al. 2019)
    adam: bool = False  # FedAdam (Reddi et al. 2021)
    betas: tuple[float, float] = (0.9, 0.99)
    tau: float = 1e-3
    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def combine(self, updates: Iterable[tuple[torch.Tensor, int]]) -> torch.Tensor:
        """Return the round's update from the clients' (update, examples) pairs (at least one): their mean
        weighted by examples, added up one at a time; or their coordinate-wise trimmed mean (which holds
        them all)."""
        if self.trim:
            deltas = torch.stack([d for d, _ in updates])
            cut = int(self.trim * len(deltas))
            return deltas.sort(0).values[cut:len(deltas) - cut].mean(0)
        total, count = None, 0
        for d, n in updates:
            total, count = (d * n if total is None else total.add_(d, alpha=n)), count + n
        assert total is not None
        return total / max(count, 1)

    def apply(self, global_vec: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """Return the next global weights: the server optimiser's step along `update`."""
        if self.adam:
            b1, b2 = self.betas
            m = self.state["m"] = b1 * self.state.get("m", torch.zeros_like(update)) + (1 - b1) * update
            v = self.state["v"] = b2 * self.state.get("v", torch.zeros_like(update)) + (1 - b2) * update ** 2
            return global_vec + self.server_lr * m / (v.sqrt() + self.tau)
        if self.momentum:
            update = self.state["m"] = self.momentum * self.state.get("m", torch.zeros_like(update)) + update
        return global_vec + self.server_lr * update


def parse_strategy(spec: str | Strategy) -> Strategy:
    """Return the Strategy named by "fedavg", "fedprox[:MU]", "fedavgm[:BETA]", "fedadam[:LR]" or "trimmed[:BETA]"."""
    if isinstance(spec, Strategy):
        return replace(spec, state={})  # a fresh server optimiser: a Strategy may serve several runs
    kind, _, arg = str(spec).strip().lower().partition(":")
    defaults = {"fedavg": None, "fedprox": 0.01, "fedavgm": 0.9, "fedadam": 0.01, "trimmed": 0.1}
    if kind not in defaults or (kind == "fedavg" and arg):
        raise InvalidInputError(f"unknown strategy {spec!r}: use {STRATEGIES}")
    try:
        value = float(arg) if arg else defaults[kind]
    except ValueError:
        raise InvalidInputError(f"strategy {spec!r}: {arg!r} is not a number") from None
    if value is not None and not math.isfinite(value):
        raise InvalidInputError(f"strategy {spec!r}: the parameter must be finite")
    if kind == "fedprox":
        if value < 0:
            raise InvalidInputError(f"strategy {spec!r}: the proximal weight mu must be ≥ 0")
        return Strategy(f"fedprox:{value:g}", mu=value)
    if kind == "fedavgm":
        if not 0 <= value < 1:
            raise InvalidInputError(f"strategy {spec!r}: the server momentum must be in [0, 1)")
        return Strategy(f"fedavgm:{value:g}", momentum=value)
    if kind == "fedadam":
        if value <= 0:
            raise InvalidInputError(f"strategy {spec!r}: the server learning rate must be > 0")
        return Strategy(f"fedadam:{value:g}", adam=True, server_lr=value)
    if kind == "trimmed":
        if not 0 < value < 0.5:
            raise InvalidInputError(f"strategy {spec!r}: the trimmed fraction must be in (0, 0.5)")
        return Strategy(f"trimmed:{value:g}", trim=value)
    return Strategy("fedavg")


# -- client-level differential privacy ---------------------------------------------------------


@dataclass
class ClientDP:
    """Client-level (ε, δ)-DP for a federated run: updates clipped to `clip`, Gaussian noise of
    σ·clip on their sum, σ calibrated to `epsilon` (or given as `noise_multiplier`)."""

    epsilon: float | None = None
    delta: float = 1e-5
    clip: float = DEFAULT_CLIP
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        for key in ("epsilon", "delta", "clip", "noise_multiplier"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise InvalidInputError(f"dp {key} must be a finite number, got {value!r}")
        if self.epsilon is None and self.noise_multiplier is None:
            raise InvalidInputError("dp needs an epsilon (e.g. {'epsilon': 8, 'delta': 1e-5}) or a noise_multiplier")
        if self.epsilon is not None and self.epsilon <= 0:
            raise InvalidInputError(f"dp epsilon must be > 0 (the privacy budget), got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InvalidInputError(f"dp delta must be between 0 and 1 (exclusive), e.g. 1e-5, got {self.delta}")
        if self.clip <= 0:
            raise InvalidInputError(f"dp clip (the norm each client update is clipped to) must be > 0, got {self.clip}")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise InvalidInputError(f"dp noise_multiplier must be ≥ 0, got {self.noise_multiplier}")

    @classmethod
    def of(cls, value: ClientDP | Mapping[str, Any] | None) -> ClientDP | None:
        """Return `value` as a ClientDP: itself, one built from a dict such as {"epsilon": 8, "delta": 1e-5,
        "clip": 1.0}, or None for no privacy."""
        if value is None or isinstance(value, ClientDP):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"dp must be a dict such as {{'epsilon': 8, 'delta': 1e-5}}, "
                                    f"not {type(value).__name__}")
        unknown = set(value) - {"epsilon", "delta", "clip", "noise_multiplier"}
        if unknown:
            raise InvalidInputError(f"unknown dp option(s) {', '.join(sorted(unknown))}: use epsilon, delta, clip "
                                    "or noise_multiplier")
        return cls(**value)

    def calibrate(self, sample_rate: float, rounds: int) -> float:
        """Set (unless given) and return the noise multiplier σ that spends `epsilon` over `rounds` rounds."""
        if self.noise_multiplier is None:
            from opacus.accountants.utils import get_noise_multiplier

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.noise_multiplier = float(get_noise_multiplier(
                        target_epsilon=self.epsilon, target_delta=self.delta, sample_rate=sample_rate,
                        steps=rounds, accountant="rdp"))
            except ValueError as e:
                raise InvalidInputError(f"client-level DP cannot reach ε={self.epsilon} at δ={self.delta} over "
                                        f"{rounds} rounds at sample rate {sample_rate:g}: {e}") from e
        return self.noise_multiplier

    def epsilon_spent(self, sample_rate: float, rounds: int) -> float:
        """Return the ε that `rounds` rounds at `sample_rate` spend, as Opacus's RDP accountant states it."""
        return epsilon_spent(self.noise_multiplier or 0.0, sample_rate, rounds, self.delta)

    def combine(self, deltas: Iterable[torch.Tensor], expected_clients: float, generator: torch.Generator,
                dim: int | None = None) -> torch.Tensor:
        """Return the private round update: (Σ clip(Δ_k) + N(0, σ²C²)) / the expected number of clients,
        the updates added up one at a time (`dim`: their length, needed when there are none)."""
        if self.noise_multiplier is None:
            raise InvalidInputError("call calibrate() before aggregating under client-level DP")
        total = None if dim is None else torch.zeros(dim, dtype=torch.float64)
        for d in deltas:
            clipped = d * min(1.0, self.clip / max(float(d.norm()), 1e-12))
            total = clipped if total is None else total.add_(clipped)
        if total is None:
            raise InvalidInputError("no client updates and no dim: nothing to add noise to")
        noise = torch.randn(total.shape, generator=generator, dtype=total.dtype)
        return (total + noise * (self.noise_multiplier * self.clip)) / expected_clients

    def report(self, sample_rate: float, rounds: int) -> dict[str, Any]:
        """Return what a model version records about its privacy."""
        return {"epsilon": self.epsilon_spent(sample_rate, rounds), "delta": self.delta, "mechanism": MECHANISM,
                "requested_epsilon": self.epsilon, "noise_multiplier": self.noise_multiplier, "clip": self.clip,
                "sample_rate": sample_rate, "rounds": rounds, "sampling": "Poisson" if sample_rate < 1 else "all"}


def epsilon_spent(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """Return ε after `rounds` Gaussian rounds of `noise_multiplier` at `sample_rate` (Opacus's RDPAccountant)."""
    from opacus.accountants import RDPAccountant

    if noise_multiplier <= 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, rounds)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": a looser bound, still a bound
        return float(accountant.get_epsilon(delta=delta))


# -- weights as one vector ----------------------------------------------------------------------


def float_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Return the keys of the floating-point entries of a state dict (weights and statistics, not counters)."""
    return [k for k, v in state.items() if v.is_floating_point()]


def flatten(state: Mapping[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    """Return the entries `keys` of `state` as one float64 vector."""
    return torch.cat([state[k].detach().reshape(-1).double().cpu() for k in keys])


def unflatten(vec: torch.Tensor, like: Mapping[str, torch.Tensor], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Return a copy of state dict `like` with its entries `keys` taken from `vec`."""
    out = {k: v.detach().clone() for k, v in like.items()}
    start = 0
    for k in keys:
        n = out[k].numel()
        out[k] = vec[start:start + n].reshape(out[k].shape).to(out[k].dtype)
        start += n
    return out


def aggregate(strategy: Strategy, global_state: Mapping[str, torch.Tensor],
              results: Sequence[tuple[Mapping[str, torch.Tensor], int]], *, dp: ClientDP | None = None,
              expected_clients: float | None = None,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Return the next global state from the clients' (state, examples) results under `strategy`
    (and client-level `dp`, whose noise is drawn from `generator` and whose mean is over `expected_clients`)."""
    keys = float_keys(global_state)
    g = flatten(global_state, keys)
    if dp is not None:
        update = dp.combine((flatten(s, keys) - g for s, _ in results), expected_clients or max(1, len(results)),
                            generator or torch.Generator(), dim=len(g))
    elif not results:
        return {k: v.detach().clone() for k, v in global_state.items()}
    else:
        update = strategy.combine((flatten(s, keys) - g, n) for s, n in results)
    return unflatten(strategy.apply(g, update), global_state, keys)


# -- the client side ----------------------------------------------------------------------------


def default_schedule(schedule: str | None, dp: ClientDP | None) -> str:
    """Return `schedule` checked, or the default: "cosine", but "none" under client-level DP (the noise
    does not shrink with the learning rate, so late rounds of small updates would be mostly noise)."""
    schedule = schedule or ("none" if dp is not None else DEFAULTS["schedule"])
    round_lr(1.0, 0, 1, schedule)
    return schedule


def round_lr(lr: float, round_index: int, rounds: int, schedule: str = "cosine") -> float:
    """Return the clients' learning rate in round `round_index` (0-based): `lr` throughout ("none"), or
    decayed from `lr` along a half cosine over the run ("cosine"), which settles the global model."""
    if schedule not in ("cosine", "none"):
        raise InvalidInputError(f"schedule must be cosine or none, not {schedule!r}")
    return lr if schedule == "none" else lr * 0.5 * (1 + math.cos(math.pi * round_index / rounds))


def local_train(model: nn.Module, data: LabeledData, global_state: Mapping[str, torch.Tensor], *, epochs: int = 1,
                lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"], mu: float = 0.0,
                momentum: float = DEFAULTS["momentum"], seed: int = 0,
                device: str = "cpu") -> tuple[dict[str, torch.Tensor], int, dict[str, float]]:
    """Train `model` from `global_state` on one client's `data` with SGD (plus FedProx's μ/2‖w − w_global‖²
    when mu > 0); return its new state, its number of examples and its mean training loss.

    A few lines of plain local SGD rather than `fit`: federated clients train a few steps each from
    a fresh start every round, and SGD's steps, unlike Adam's, stay small for the classes a client lacks."""
    from lepton_ai.train.loop import as_inputs, batches

    dev = torch.device(device)
    model.load_state_dict(global_state)
    model.to(dev).train()
    anchors = [(p, global_state[k].to(dev)) for k, p in model.named_parameters()] if mu > 0 else []
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    xs, labels = as_inputs(model, data), data.labels
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    total, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for i, x in enumerate(batches(model, xs, batch_size, dev, order)):
            y = labels[order[i * batch_size:(i + 1) * batch_size]].to(dev)
            loss = nn.functional.cross_entropy(model(x), y)
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
def cpu_threads(model: nn.Module, device: str = "cpu") -> Iterator[None]:
    """Run clients' training of a small model (< 1M parameters) on one CPU thread: their steps are too small
    to split, and OpenMP threads spinning against other work slow them ~10× on a busy machine."""
    small = sum(p.numel() for p in model.parameters()) < 1_000_000 and torch.device(device).type == "cpu"
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- building the model -------------------------------------------------------------------------


def build_model(model: str | nn.Module, train: LabeledData, val: LabeledData | None = None) -> nn.Module:
    """Return the global model: a LeptonModel as given, or one built from an architecture name or
    registry reference for `train`'s classes and input size, with its input standardisation set."""
    from lepton_ai.models import LeptonModel

    if isinstance(model, nn.Module):
        net = model
    else:
        net = LeptonModel(num_classes=train.num_classes, input_size=train.input_size or None, classes=train.classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fresh architecture starts from random weights on purpose
            net.load_pretrained_model(model)
    if getattr(net, "net", None) is None:
        raise InvalidInputError("the model has no backbone yet: call load_pretrained_model() first")
    standardize(net, train, val)
    return net


def standardize(model: nn.Module, train: LabeledData, val: LabeledData | None) -> None:
    """Set the model's input standardisation without pooling the clients' data: from the value range the
    data declares (pixels 0..pixel_max map to -1..1), else from the server's validation split."""
    pixel_max = train.meta.get("pixel_max")
    if pixel_max and hasattr(model, "preprocess"):
        model.preprocess["pixel_max"] = pixel_max
    norm = getattr(getattr(model, "net", None), "normalize", None)
    if norm is None or bool(norm.fitted):
        return
    with torch.no_grad():
        if pixel_max:
            norm.mean.fill_(pixel_max / 2)
            norm.std.fill_(pixel_max / 2)
            norm.fitted.fill_(True)
        elif val is not None and val.features is not None and len(val) > 1:
            norm.fit(val.features[:20000])
        else:
            norm.fitted.fill_(True)  # leave inputs as they are rather than fit on one client's data


def load_splits(data: str | LabeledData, seed: int = 0,
                test_data: LabeledData | None = None) -> tuple[LabeledData, LabeledData | None, LabeledData]:
    """Return (train, val, test): the named data set's splits, or `data` itself split the same way."""
    from lepton_ai.data import load
    from lepton_ai.data.datasets import split_indices

    if isinstance(data, LabeledData):
        if test_data is not None:
            return data, None, test_data
        idx = split_indices(data.labels.numpy(), seed)
        return tuple(data.subset(idx[s], f"[{s}]") for s in ("train", "val", "test"))  # type: ignore[return-value]
    if not isinstance(data, (str, Path)):
        raise InvalidInputError(f"data must be a data set name, a path or a LabeledData, not {type(data).__name__}")
    train, val, test = (load(data, s, seed=seed) for s in ("train", "val", "test"))
    return train, val, test if test_data is None else test_data


# -- a run: per-round figures, report, registered model ----------------------------------------


@dataclass
class FederatedResult:
    """What a federated run produced: the registered global model, its test figures per round and its privacy."""

    ref: str
    model: nn.Module
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    clients: int
    privacy: dict[str, Any] | None
    report_dir: Path
    run_id: int
    seconds: float

    @property
    def name(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def version(self) -> int:
        return int(self.ref.rsplit(":", 1)[1])

    def to_json(self) -> dict[str, Any]:
        """Return the document `lepton fl run --json` prints."""
        return {"name": self.name, "version": self.version,
                "metrics": {"accuracy": self.metrics["accuracy"], "loss": self.metrics["loss"]},
                "rounds": len(self.history), "clients": self.clients,
                "privacy": {k: self.privacy[k] for k in ("epsilon", "delta", "mechanism")} if self.privacy else None}


class RunRecord:
    """A federated run in the registry (kind "federated"): the test figures of each round as they come,
    then the report (JSON, PNG) and the final global model registered with its metrics and privacy.
    Used as a context manager, it marks the run failed (or cancelled) when the block raises."""

    def __init__(self, name: str, params: dict[str, Any], report_dir: str | Path | None = None) -> None:
        from lepton_ai import config
        from lepton_ai.store import Registry
        from lepton_ai.store.refs import check_name

        self.name, self.params = check_name(name), params
        self.registry = Registry()
        self.run_id = self.registry.start_run("federated", params, name=name).id
        self.report_dir = Path(report_dir or config.home() / "reports" / "federated" / f"{name}-run{self.run_id}")
        self.history: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        if e is not None:
            try:
                self.registry.end_run(self.run_id, "cancelled" if isinstance(e, KeyboardInterrupt) else "failed")
            except Exception:
                pass  # the original error is the one to report

    def log_round(self, model: nn.Module, test: LabeledData, **row: Any) -> dict[str, Any]:
        """Evaluate the global `model` on `test`, record the round's figures (plus `row`) and return them."""
        from lepton_ai.train.loop import evaluate

        figures = evaluate(model, test)
        if not all(math.isfinite(figures[k]) for k in ("loss", "accuracy")):
            raise InvalidInputError(f"the global model diverged in round {len(self.history) + 1} (test loss "
                                    f"{figures['loss']}): lower the clients' lr or the server's step/momentum")
        row = {"round": len(self.history) + 1, "accuracy": figures["accuracy"], "loss": figures["loss"],
               "f1_macro": figures["f1_macro"], **row}
        self.history.append(row)
        self.registry.log_metrics(self.run_id, {k: v for k, v in row.items() if k != "round"}, step=row["round"])
        return row

    def finish(self, model: nn.Module, clients: int, privacy: dict[str, Any] | None,
               description: str | None = None) -> FederatedResult:
        """Write the report, register `model` with the last round's figures, end the run; return the result."""
        if not self.history:
            raise InvalidInputError("no round completed: nothing to register")
        seconds = time.perf_counter() - self.t0
        last = self.history[-1]
        metrics = {"accuracy": last["accuracy"], "loss": last["loss"], "f1_macro": last["f1_macro"],
                   "rounds": len(self.history), "clients": clients, "train_seconds": seconds}
        if privacy:
            metrics["epsilon"] = privacy["epsilon"]
        recipe: dict[str, Any] = {"federated": {k: v for k, v in self.params.items() if k != "dp"}}
        if privacy:
            recipe["privacy"] = privacy
        write_report(self.report_dir, {"name": self.name, "params": self.params, "metrics": metrics,
                                       "rounds": self.history, "privacy": privacy})
        p = self.params
        ref = model.save(self.name, metrics=metrics, run_id=self.run_id, recipe=recipe,
                         description=description or (f"{p['model']} trained federated on {p['data']}: "
                                                     f"{clients} clients, {p['partition']}, {p['strategy']}"))
        self.registry.end_run(self.run_id, "completed")
        model.eval()
        return FederatedResult(ref, model, metrics, self.history, clients, privacy, self.report_dir, self.run_id,
                               seconds)


def write_report(folder: Path, report: dict[str, Any]) -> Path:
    """Write report.json and accuracy.png (test accuracy and loss per round) into `folder`; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
    rounds = [row["round"] for row in report["rounds"]]
    fig, acc = plt.subplots(figsize=(7, 4))
    acc.plot(rounds, [row["accuracy"] for row in report["rounds"]], color="tab:blue", marker=".")
    acc.set_xlabel("round")
    acc.set_ylabel("test accuracy", color="tab:blue")
    loss = acc.twinx()
    loss.plot(rounds, [row["loss"] for row in report["rounds"]], color="tab:red", marker=".")
    loss.set_ylabel("test loss", color="tab:red")
    p = report["params"]
    acc.set_title(f"{report['name']}: {p['clients']} clients, {p['partition']}, {p['strategy']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "accuracy.png", dpi=110)
    plt.close(fig)
    return folder


def run_params(model: str | nn.Module, data: str | LabeledData, **options: Any) -> dict[str, Any]:
    """Return a run's parameters as the registry records them (names, not objects)."""
    return {"model": model if isinstance(model, str) else getattr(model, "arch", None) or "model",
            "data": str(data) if not isinstance(data, LabeledData) else data.name, **options}


def default_name(model: str | nn.Module, data: str | LabeledData) -> str:
    """Return the registry name a run gets when none is given, e.g. fl-mlp-digits."""
    m = model if isinstance(model, str) else getattr(model, "arch", None) or "model"
    d = data.name.split("[")[0] if isinstance(data, LabeledData) else Path(str(data)).stem
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in f"fl-{m}-{d or 'data'}")[:128]


def check_run(clients: int, rounds: int, fraction: float, local_epochs: int, lr: float, batch_size: int) -> None:
    """Raise, in one line, on a count, rate or fraction out of range."""
    for key, value in (("clients", clients), ("rounds", rounds), ("local_epochs", local_epochs),
                       ("batch_size", batch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InvalidInputError(f"{key} must be a whole number ≥ 1, got {value!r}")
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"fraction (of clients sampled per round) must be in (0, 1], got {fraction}")
    if not lr > 0:
        raise InvalidInputError(f"lr must be > 0, got {lr}")


def check_strategy_dp(plan: Strategy, dp: ClientDP | None) -> None:
    """Refuse a strategy that client-level DP cannot be combined with."""
    if dp is not None and plan.trim:
        raise InvalidInputError("a trimmed mean cannot be combined with client-level DP (the noise is calibrated "
                                "to a clipped sum): use fedavg, fedprox, fedavgm or fedadam")


# -- the simulation -----------------------------------------------------------------------------


def federated_train(model: str | nn.Module | None = None, data: str | LabeledData = "digits", *, clients: int = 10,
                    rounds: int = 30, partition: str = "iid", strategy: str | Strategy = DEFAULTS["strategy"],
                    fraction: float = 1.0, local_epochs: int = DEFAULTS["local_epochs"], lr: float = DEFAULTS["lr"],
                    batch_size: int = DEFAULTS["batch_size"], schedule: str | None = None,
                    dp: ClientDP | Mapping[str, Any] | None = None,
                    seed: int = 0, name: str | None = None, test_data: LabeledData | None = None,
                    report_dir: str | Path | None = None, device: str = "cpu", progress: bool = True,
                    description: str | None = None) -> FederatedResult:
    """Simulate federated training of `model` (default: cnn-small for images, else mlp) on `data` split
    among `clients` by `partition`, on this machine: the clients train one after the other on one model
    object; the global model is tested after every round; the report (JSON, PNG) is written and the
    final model registered as `name` (default fl-MODEL-DATA). `dp={"epsilon": 8, "delta": 1e-5,
    "clip": 1.0}` makes it client-level differentially private."""
    from lepton_ai.privacy.partition import partition as split
    from lepton_ai.train.loop import check_data

    check_run(clients, rounds, fraction, local_epochs, lr, batch_size)
    plan, private = parse_strategy(strategy), ClientDP.of(dp)
    schedule = default_schedule(schedule, private)
    check_strategy_dp(plan, private)
    train, val, test = load_splits(data, seed, test_data)
    model = model or default_model(train, private)
    parts = split(train, partition, clients, seed)
    torch.manual_seed(seed)  # the same initial weights for the same seed
    net = build_model(model, train, val)
    check_dp_model(net, private)
    check_data(net, train)
    check_data(net, test)
    net.to(device)
    if private is not None:
        private.calibrate(fraction, rounds)
    rng, noise = np.random.default_rng(seed), torch.Generator().manual_seed(seed + 1)
    per_round = max(1, round(fraction * clients))
    params = run_params(model, data, clients=clients, rounds=rounds, partition=partition, strategy=plan.name,
                        fraction=fraction, local_epochs=local_epochs, lr=lr, batch_size=batch_size, schedule=schedule,
                        seed=seed, dp=None if private is None else asdict(private))
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    with RunRecord(name or default_name(model, data), params, report_dir) as record, _progress(progress) as bar, \
            cpu_threads(net, device):
        task = bar.add_task("rounds", total=rounds, acc=0.0, loss=0.0)
        for r in range(rounds):
            r0 = time.perf_counter()
            chosen = (np.flatnonzero(rng.random(clients) < fraction) if private is not None  # Poisson, as accounted
                      else np.sort(rng.choice(clients, per_round, replace=False)))
            sub = bar.add_task(f"round {r + 1}/{rounds}", total=len(chosen), acc=0.0, loss=0.0)
            results = []
            for c in chosen.tolist():
                new, n, _ = local_train(net, parts[c], state, epochs=local_epochs, lr=round_lr(lr, r, rounds, schedule),
                                        batch_size=batch_size,
                                        mu=plan.mu, seed=seed * 1_000_003 + r * 10_007 + c, device=device)
                results.append((new, n))
                bar.advance(sub)
            bar.remove_task(sub)
            state = aggregate(plan, state, results, dp=private, expected_clients=fraction * clients, generator=noise)
            net.load_state_dict(state)
            extra = {"epsilon": private.epsilon_spent(fraction, r + 1)} if private is not None else {}
            row = record.log_round(net, test, clients=len(chosen), examples=sum(n for _, n in results),
                                   seconds=time.perf_counter() - r0, **extra)
            bar.update(task, advance=1, acc=row["accuracy"], loss=row["loss"])
        privacy = private.report(fraction, rounds) if private is not None else None
        return record.finish(net, clients, privacy, description)


def _progress(enabled: bool):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("test acc {task.fields[acc]:.3f} · loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                    disable=not enabled)
