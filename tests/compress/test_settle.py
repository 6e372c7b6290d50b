"""Interleaved measurement: ratios against the baseline with their spread, a choice that noise does not
flip (ties go to the smaller artifact), the same threads for every runtime."""

from __future__ import annotations

import time

import torch

from lepton_ai.compress.settle import MIN_ROUNDS, Ratio, choose, settle


def _sleeper(seconds: float):
    def run(x: torch.Tensor) -> torch.Tensor:
        time.sleep(seconds * len(x) / 8)
        return x

    return run


def test_ratios_are_against_the_baseline_each_round_with_their_spread() -> None:
    threads = []

    def base(x: torch.Tensor) -> torch.Tensor:
        threads.append(torch.get_num_threads())
        return _sleeper(0.004)(x)

    runnables = {"base": base, "half": _sleeper(0.002), "same": _sleeper(0.004)}
    got = settle(runnables, torch.zeros(8, 3), batch_size=8, budget_s=0.0, threads=1)
    assert got.rounds == MIN_ROUNDS and set(threads) == {1}
    assert got.throughput["base"] == Ratio(1.0, 1.0, 1.0)
    half = got.throughput["half"]
    assert 1.5 < half.median < 2.5 and half.low <= half.median <= half.high
    assert 0.8 < got.throughput["same"].median < 1.25
    assert got.fastest_rounds["half"] >= MIN_ROUNDS - 1 and sum(got.fastest_rounds.values()) == got.rounds


def test_candidates_that_cannot_be_told_apart_are_tied_and_the_smaller_wins() -> None:
    ratios = {
        "base": Ratio(1.0, 1.0, 1.0),
        "fast-big": Ratio(3.0, 2.8, 3.2),
        "fast-small": Ratio(2.9, 2.7, 3.0),
        "slower-tiny": Ratio(2.0, 1.9, 2.1),
    }
    sizes = {"base": 1000, "fast-big": 400, "fast-small": 100, "slower-tiny": 10}
    assert choose(ratios, sizes) == ("fast-small", ["fast-big", "fast-small"])
    # ranges apart: the faster wins whatever its size
    apart = {**ratios, "fast-small": Ratio(2.5, 2.4, 2.6)}
    assert choose(apart, sizes) == ("fast-big", ["fast-big"])
    # a tolerance widens the ties beyond the overlap
    assert choose(apart, sizes, tolerance=0.4)[0] == "slower-tiny"
