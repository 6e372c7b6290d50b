"""The serving benchmark's measuring code, against a real `lepton serve` process, so it cannot rot
between the runs recorded in benchmarks/RESULTS.md."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

from lepton_ai.serve.server import ServerProcess

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # as when the script runs: its folder (common.py) is importable
spec = importlib.util.spec_from_file_location("bench_serve", BENCHMARKS / "serve.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_half_load_rounds_each_against_a_fresh_batch_time_and_the_median_reported() -> None:
    batch_times = iter([0.5, 1.0, 2.0])
    with ServerProcess([f"{BENCHMARKS / 'baselines' / 'echo.py'}:Echo"]) as server:
        r = bench.half_load(server, {"inputs": [[0.0] * 64]}, 100.0, lambda: next(batch_times), duration=0.5)
        mean_batch = bench._mean_batch(server.url)
    ratios = [x["p99_vs_batch"] for x in r["rounds"]]
    assert [x["batch_ms"] for x in r["rounds"]] == [0.5, 1.0, 2.0]
    assert ratios == [x["latency_ms"]["p99"] / x["batch_ms"] for x in r["rounds"]]
    assert r["p99_vs_batch"] == statistics.median(ratios)
    assert r["latency_ms"]["p99"] / r["batch_ms"] == r["p99_vs_batch"]
    assert r["errors"] == {} and r["ok"] >= 40 and r["cpu_us_per_request"]["server"] > 0
    assert mean_batch is not None and mean_batch >= 1
