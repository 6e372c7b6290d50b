"""Speed figures that hold from run to run: the candidates that could win are measured against the baseline
interleaved (baseline, A, B, baseline, A, B, …) in rounds, on the same threads, until their ratios settle or
the time runs out. A ratio is the median of its per-round ratios, with their interquartile range: one
unlucky window for the baseline moves one round, not every figure (pyperf's and pytest-benchmark's
practice of repeated, interleaved measurement)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch

from lepton_ai.compress.measure import take, timed
from lepton_ai.device import torch_threads
from lepton_ai.machine import cpu_info

# a round's measurement of one candidate: this long at its batch size, half as long at batch 1
WINDOW_S = 0.12
MIN_ROUNDS, MAX_ROUNDS = 5, 15
# settled when every ratio's interquartile range is within this share of its median
SETTLED = 0.05


@dataclass(frozen=True)
class Ratio:
    """A candidate's figure against the baseline's (> 1: better): the median of the per-round ratios and
    their interquartile range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Ratio:
        """Return the median and quartiles of `values` (at least one)."""
        if len(values) < 2:
            return cls(values[0], values[0], values[0])
        low, _, high = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), low, high)

    def overlaps(self, other: Ratio) -> bool:
        """Return whether the two ranges share a value: the measurements cannot tell them apart."""
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict[str, float]:
        """Return the figure as JSON-ready numbers."""
        return asdict(self)


@dataclass(frozen=True)
class Settled:
    """Each candidate's throughput and batch-1 latency against the baseline's (both as speedups), over
    `rounds` interleaved rounds, and in how many of them each was the fastest at its batch size."""

    throughput: dict[str, Ratio]
    latency: dict[str, Ratio]
    fastest_rounds: dict[str, int]
    rounds: int
    seconds: float
    threads: int


def settle(
    runnables: Mapping[str, Callable[[Any], Any]],
    inputs: Any,
    batch_size: int,
    budget_s: float,
    threads: int | None = None,
) -> Settled:
    """Measure `runnables` (the baseline first) interleaved in rounds on `threads` PyTorch threads (the
    usable cores by default, as ONNX Runtime sessions get) until their ratios settle, MAX_ROUNDS, or
    `budget_s` after MIN_ROUNDS."""
    names = list(runnables)
    one, batch = take(inputs, 1), take(inputs, batch_size)
    per_round: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    start, cores = time.perf_counter(), threads or cpu_info()["cores"]
    with torch_threads(cores), torch.inference_mode():
        for fn in runnables.values():
            fn(one), fn(batch)
        rounds = 0
        while rounds < MAX_ROUNDS:
            for name, fn in runnables.items():
                per_round[name].append(_window(fn, batch, one))
            # the baseline again at the round's end (baseline, A, B, baseline): a slow spell during the round
            # moves every candidate's ratio less when the baseline's two windows are averaged
            again = _window(runnables[names[0]], batch, one)
            first = per_round[names[0]][-1]
            per_round[names[0]][-1] = ((first[0] + again[0]) / 2, (first[1] + again[1]) / 2)
            rounds += 1
            figures = _figures(per_round, names[0])
            if rounds >= MIN_ROUNDS and (_settled(figures) or time.perf_counter() - start > budget_s):
                break
    throughput, latency = figures
    return Settled(throughput, latency, _fastest(per_round), rounds, time.perf_counter() - start, cores)


def _window(fn: Callable[[Any], Any], batch: Any, one: Any) -> tuple[float, float]:
    """Return the median seconds of a call of `fn` on `batch` (over WINDOW_S) and on `one` example."""
    per_batch = statistics.median(timed(partial(fn, batch), 2, WINDOW_S))
    return per_batch, statistics.median(timed(partial(fn, one), 3, WINDOW_S / 2))


def _figures(
    per_round: dict[str, list[tuple[float, float]]], baseline: str
) -> tuple[dict[str, Ratio], dict[str, Ratio]]:
    """Return each candidate's throughput and latency speedups over the rounds so far, each round's
    against that round's baseline."""
    base = per_round[baseline]
    throughput = {
        name: Ratio.of([b[0] / t[0] for t, b in zip(times, base)]) for name, times in per_round.items()
    }
    latency = {
        name: Ratio.of([b[1] / t[1] for t, b in zip(times, base)]) for name, times in per_round.items()
    }
    return throughput, latency


def _settled(figures: tuple[dict[str, Ratio], dict[str, Ratio]]) -> bool:
    return all(r.high - r.low <= SETTLED * r.median for each in figures for r in each.values())


def _fastest(per_round: dict[str, list[tuple[float, float]]]) -> dict[str, int]:
    """Return in how many rounds each candidate had the shortest time at its batch size."""
    wins = dict.fromkeys(per_round, 0)
    for r in range(len(next(iter(per_round.values())))):
        wins[min(per_round, key=lambda name: per_round[name][r][0])] += 1
    return wins


@dataclass(frozen=True)
class Choice:
    """The candidate chosen, those the measurements could not tell from the fastest (it among them), and
    in what share of the rounds the chosen one was the fastest of all."""

    name: str
    tied: list[str]
    fastest_share: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the choice as JSON-ready values."""
        return asdict(self)


def choose(
    ratios: Mapping[str, Ratio], sizes: Mapping[str, int], tolerance: float = 0.0
) -> tuple[str, list[str]]:
    """Return the candidate to choose among `ratios` (higher is better) and its ties: those whose range
    overlaps the best median's, or whose median is within `tolerance` of it. Ties go to the smaller
    artifact, then the higher median: noise must not flip the recipe."""
    top = max(ratios, key=lambda name: ratios[name].median)
    best = ratios[top]
    tied = [
        name for name, r in ratios.items() if r.overlaps(best) or r.median >= best.median * (1 - tolerance)
    ]
    return min(tied, key=lambda name: (sizes[name], -ratios[name].median)), tied
