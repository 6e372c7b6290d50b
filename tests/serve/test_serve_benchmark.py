"""The serving benchmark's measuring code, against a real `lepton serve` process, so it cannot rot
between the runs recorded in benchmarks/RESULTS.md."""

from __future__ import annotations

import statistics

from lepton_ai.serve.server import ServerProcess


def test_half_load_rounds_each_against_a_fresh_batch_time_and_the_median_reported(benchmark_script) -> None:
    bench = benchmark_script("serve")
    batch_times = iter([0.5, 1.0, 2.0])
    with ServerProcess([f"{bench.BASELINES / 'echo.py'}:Echo"]) as server:
        r = bench.half_load(server, {"inputs": [[0.0] * 64]}, 100.0, lambda: next(batch_times), duration=0.5)
        mean_batch = bench._mean_batch(server.url)
    ratios = [x["p99_vs_batch"] for x in r["rounds"]]
    assert [x["batch_ms"] for x in r["rounds"]] == [0.5, 1.0, 2.0]
    assert ratios == [x["latency_ms"]["p99"] / x["batch_ms"] for x in r["rounds"]]
    assert r["p99_vs_batch"] == statistics.median(ratios)
    assert r["latency_ms"]["p99"] / r["batch_ms"] == r["p99_vs_batch"]
    assert r["errors"] == {} and r["ok"] >= 40 and r["cpu_us_per_request"]["server"] > 0
    assert mean_batch is not None and mean_batch >= 1


def test_the_no_compute_floor_serves_the_model_as_lepton_serve_does_but_never_runs_it(
    benchmark_script, digits_ref: str, monkeypatch
) -> None:
    import subprocess

    import httpx

    from lepton_ai.serve.target import load_photon

    target = f"{benchmark_script('serve').BASELINES / 'echo.py'}:NoCompute"
    monkeypatch.setenv("LEPTON_NO_COMPUTE_REF", digits_ref)
    # `init` not run: no model loaded, so nothing to compute with
    photon = load_photon(target)
    assert photon.predict([[1.0] * 64] * 3).tolist() == [0, 0, 0] and photon.runnable is None
    with ServerProcess([target]) as s:
        good = httpx.post(f"{s.url}/predict", json={"inputs": [[16.0] * 64, [0.0] * 64]})
        bad = httpx.post(f"{s.url}/predict", json={"inputs": [[1.0] * 63]})
        model_process = subprocess.run(
            ["pgrep", "-P", str(s.proc.pid)], capture_output=True, text=True
        ).stdout
    assert good.json() == {"outputs": [0, 0]}
    # the served model's own checks
    assert bad.status_code == 422 and "expected 64 numbers" in bad.text
    assert model_process.split(), "the handler runs in a model process, as the served model's does"
