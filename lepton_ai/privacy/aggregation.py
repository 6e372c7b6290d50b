"""The server side of a federated round, shared by the simulation and the Flower server.

The clients' updates Δ = w_client − w_global of the trainable weights (one flat vector each) are
combined — sample-weighted mean (FedAvg, FedProx), coordinate-wise trimmed mean (robust to a few
poisoned clients) or, under client-level DP, the clipped sum plus Gaussian noise over a fixed
denominator — and applied by the server optimiser (plain step, momentum for FedAvgM, Adam for
FedAdam). The other floating-point entries of the state (BatchNorm's running statistics, frozen
weights) are not weights to step along: they take the clients' mean (trimmed under a trimmed mean),
and stay as they are under DP.

Client-level DP is DP-FedAvg (McMahan et al. 2018): each round samples each client independently
with probability q (Poisson, as the accountant assumes), clips each update to norm C, adds
N(0, σ²C²) to the sum and divides by the expected number of clients qN; Opacus's RDP accountant
turns (σ, q, rounds) into the ε spent, and calibrates σ to a target ε. It protects whole clients
(all of one client's data), not single examples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy.dp import FromMapping, check_budget, epsilon_spent, opacus

MECHANISM = "client-level DP-FedAvg (Gaussian, RDP accountant)"
STRATEGIES = "fedavg, fedprox[:MU], fedavgm[:BETA], fedadam[:LR] or trimmed[:BETA]"
DEFAULT_CLIP = 1.0

State = Mapping[str, torch.Tensor]
StateT = TypeVar("StateT", bound=State)


# -- strategies ---------------------------------------------------------------------------------


@dataclass
class Strategy:
    """How clients train (FedProx's μ) and how the server turns their updates into the next global
    weights (mean or trimmed mean, then a plain, momentum or Adam step). Holds the server optimiser's
    state between rounds."""

    name: str = "fedavg"
    # FedProx: weight of the proximal term μ/2‖w − w_global‖² in each client's loss
    mu: float = 0.0
    # trimmed mean: fraction cut at each end of every coordinate
    trim: float = 0.0
    server_lr: float = 1.0
    # FedAvgM (Hsu et al. 2019)
    momentum: float = 0.0
    # FedAdam (Reddi et al. 2021)
    adam: bool = False
    betas: tuple[float, float] = (0.9, 0.99)
    tau: float = 1e-3
    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def combine(self, updates: Iterable[tuple[torch.Tensor, int]]) -> torch.Tensor:
        """Return the round's update from the clients' (update, examples) pairs (at least one): their mean
        weighted by examples, added up one at a time; or their coordinate-wise trimmed mean."""
        if self.trim:
            deltas = torch.stack([d for d, _ in updates])
            cut = int(self.trim * len(deltas))
            if cut == 0:
                warnings.warn(
                    f"{self.name}: {len(deltas)} clients are too few to trim {self.trim:g} at each end; "
                    "this round is their plain mean",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return deltas.sort(0).values[cut : len(deltas) - cut].mean(0)
        return weighted_mean(updates)

    def apply(self, weights: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """Return the next global weights: the server optimiser's step along `update`."""
        if self.adam:
            b1, b2 = self.betas
            m = self.state["m"] = b1 * self.state.get("m", torch.zeros_like(update)) + (1 - b1) * update
            v = self.state["v"] = b2 * self.state.get("v", torch.zeros_like(update)) + (1 - b2) * update**2
            return weights + self.server_lr * m / (v.sqrt() + self.tau)
        if self.momentum:
            update = self.state["m"] = self.momentum * self.state.get("m", torch.zeros_like(update)) + update
        return weights + self.server_lr * update


def weighted_mean(pairs: Iterable[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Return the mean of the (vector, examples) pairs (at least one) weighted by examples."""
    total, count = None, 0
    for d, n in pairs:
        total, count = (d * n if total is None else total.add_(d, alpha=n)), count + n
    if total is None:
        raise InvalidInputError("no client results to average")
    return total / max(count, 1)


def parse_strategy(spec: str | Strategy) -> Strategy:
    """Return the Strategy named by "fedavg", "fedprox[:MU]", "fedavgm[:BETA]", "fedadam[:LR]" or
    "trimmed[:BETA]"."""
    if isinstance(spec, Strategy):
        # a fresh server optimiser: a Strategy may serve several runs
        return replace(spec, state={})
    kind, _, arg = str(spec).strip().lower().partition(":")
    defaults = {"fedprox": 0.01, "fedavgm": 0.9, "fedadam": 0.01, "trimmed": 0.1}
    if kind == "fedavg" and not arg:
        return Strategy("fedavg")
    if kind not in defaults:
        raise InvalidInputError(f"unknown strategy {spec!r}: use {STRATEGIES}")
    try:
        value = float(arg) if arg else defaults[kind]
    except ValueError:
        raise InvalidInputError(f"strategy {spec!r}: {arg!r} is not a number") from None
    if not math.isfinite(value):
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


@dataclass(frozen=True)
class ClientDP(FromMapping):
    """Client-level (ε, δ)-DP for a federated run: updates clipped to `clip`, Gaussian noise of
    σ·clip on their sum, σ calibrated to `epsilon` (or given as `noise_multiplier`, then checked
    against `epsilon` when both are given)."""

    EXAMPLE: ClassVar[str] = "{'epsilon': 8, 'delta': 1e-5, 'clip': 1.0}"

    epsilon: float | None = None
    delta: float = 1e-5
    clip: float = DEFAULT_CLIP
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        if self.epsilon is None and self.noise_multiplier is None:
            raise InvalidInputError(f"dp needs an epsilon, e.g. {self.EXAMPLE}, or a noise_multiplier")
        check_budget(self.epsilon, self.delta, clip=self.clip, noise_multiplier=self.noise_multiplier)

    def calibrate(self, sample_rate: float, rounds: int) -> ClientDP:
        """Return this config with the noise multiplier σ that spends at most `epsilon` over `rounds` rounds
        at `sample_rate` (the one given, once checked against `epsilon`)."""
        if self.noise_multiplier is not None:
            spent = epsilon_spent(self.noise_multiplier, sample_rate, rounds, self.delta)
            if self.epsilon is not None and spent > self.epsilon * (1 + 1e-6):
                raise InvalidInputError(
                    f"noise_multiplier {self.noise_multiplier:g} spends ε={spent:.3g} over "
                    f"{rounds} rounds, more than the epsilon {self.epsilon:g} asked for: "
                    "give one of the two"
                )
            return self
        get_noise_multiplier = opacus("accountants.utils").get_noise_multiplier
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sigma = float(
                    get_noise_multiplier(
                        target_epsilon=self.epsilon,
                        target_delta=self.delta,
                        sample_rate=sample_rate,
                        steps=rounds,
                        accountant="rdp",
                    )
                )
        except ValueError as e:
            raise InvalidInputError(
                f"client-level DP cannot reach ε={self.epsilon} at δ={self.delta} over "
                f"{rounds} rounds at sample rate {sample_rate:g}: {e}"
            ) from e
        return replace(self, noise_multiplier=sigma)

    def epsilon_spent(self, sample_rate: float, rounds: int) -> float:
        """Return the ε that `rounds` rounds at `sample_rate` spend, as Opacus's RDP accountant states it."""
        return epsilon_spent(self._sigma(), sample_rate, rounds, self.delta)

    def combine(
        self, deltas: Iterable[torch.Tensor], expected_clients: float, generator: torch.Generator, dim: int
    ) -> torch.Tensor:
        """Return the private round update: (Σ clip(Δ_k) + N(0, σ²C²)) / the expected number of clients,
        the updates (of length `dim`, finite) added up one at a time."""
        # not calibrated: say so before adding anything up
        self._sigma()
        total = torch.zeros(dim, dtype=torch.float64)
        for d in deltas:
            norm = float(d.norm())
            if not math.isfinite(norm):
                raise InvalidInputError(
                    "a client update is not finite: drop it before aggregating (finite())"
                )
            total.add_(d, alpha=min(1.0, self.clip / max(norm, 1e-12)))
        return self.noised(total, expected_clients, generator)

    def noised(
        self, total: torch.Tensor, expected_clients: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Return (`total` + N(0, σ²C²)) / the expected number of clients: the private mean of a sum of
        updates each clipped to C (here, or by the clients themselves under secure aggregation)."""
        noise = torch.randn(total.shape, generator=generator, dtype=total.dtype)
        return (total + noise * (self._sigma() * self.clip)) / expected_clients

    def report(self, sample_rate: float, rounds: int) -> dict[str, Any]:
        """Return what a model version records about its privacy."""
        return {
            "epsilon": self.epsilon_spent(sample_rate, rounds),
            "delta": self.delta,
            "mechanism": MECHANISM,
            "requested_epsilon": self.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "sample_rate": sample_rate,
            "rounds": rounds,
            "sampling": "Poisson" if sample_rate < 1 else "all",
        }

    def _sigma(self) -> float:
        if self.noise_multiplier is None:
            raise InvalidInputError("calibrate() client-level DP before aggregating or accounting")
        return self.noise_multiplier


# -- aggregation --------------------------------------------------------------------------------


def weight_keys(model: nn.Module) -> list[str]:
    """Return the state-dict keys of `model`'s trainable weights, tied ones under each of their names: what
    the server optimiser and DP act on."""
    return [k for k, p in model.named_parameters(remove_duplicate=False) if p.requires_grad]


def flatten(state: State, keys: Sequence[str]) -> torch.Tensor:
    """Return the entries `keys` of `state` as one float64 vector."""
    if not keys:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([state[k].detach().reshape(-1).double().cpu() for k in keys])


def unflatten(vec: torch.Tensor, like: State, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Return a copy of state dict `like` with its entries `keys` taken from `vec`."""
    out = {k: v.detach().clone() for k, v in like.items()}
    start = 0
    for k in keys:
        n = out[k].numel()
        out[k] = vec[start : start + n].reshape(out[k].shape).to(out[k].dtype)
        start += n
    return out


def finite(results: Sequence[tuple[StateT, int]]) -> tuple[list[tuple[StateT, int]], int]:
    """Return the results whose floating-point entries are all finite, and how many were dropped (a
    diverged or malicious client's NaN would otherwise pass clipping and poison the global model)."""
    ok = [
        (s, n)
        for s, n in results
        if all(bool(torch.isfinite(v).all()) for v in s.values() if v.is_floating_point())
    ]
    return ok, len(results) - len(ok)


def aggregate(
    strategy: Strategy,
    global_state: State,
    results: Sequence[tuple[State, int]],
    *,
    weights: Collection[str],
    dp: ClientDP | None = None,
    expected_clients: float | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Return the next global state from the clients' (state, examples) results (finite ones): the trainable
    `weights` by `strategy`, or by client-level `dp` (noise from `generator`, mean over `expected_clients`);
    the other floating-point entries (running statistics, frozen weights) by the strategy's mean without its
    server step — sample-weighted, or trimmed — and unchanged under DP."""
    keys = [k for k in global_state if k in weights]
    stats = [k for k, v in global_state.items() if v.is_floating_point() and k not in weights]
    if not results and dp is None:
        return {k: v.detach().clone() for k, v in global_state.items()}
    g = flatten(global_state, keys)
    if dp is not None:
        update = dp.combine(
            (flatten(s, keys) - g for s, _ in results),
            expected_clients or max(1, len(results)),
            generator or torch.Generator(),
            dim=len(g),
        )
    else:
        update = strategy.combine((flatten(s, keys) - g, n) for s, n in results)
    new = unflatten(strategy.apply(g, update), global_state, keys)
    if stats and dp is None:
        new = unflatten(strategy.combine((flatten(s, stats), n) for s, n in results), new, stats)
    return new
