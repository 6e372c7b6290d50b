"""Serving benchmark (issue 5): served throughput and latency as ratios against baselines
measured in the same run, on the same machine, with the same load generator (`lepton bench
serve`'s, running in this process) and the same model artifact.

- Overhead-bound: digits `cnn-small` (trained here), one example per request, closed loop at
  concurrency 32: `lepton serve` against a plain FastAPI endpoint calling the model per
  request and Ray Serve with `@serve.batch` (benchmarks/baselines/). Target: ≥ 1.5× the better
  baseline in examples/s at equal or lower p99. Per-request overhead = 1/served rate − the
  model's own time per example at the served batch size (raw, in process). `lepton serve` runs
  this model in a process of its own; with `--no-model-process` (the model in the server's
  process) it is measured beside it.
- Compute-bound: all-MiniLM-L6-v2 optimized for this machine (ONNX Runtime int8, registered by
  `optimize`), one sentence per request, 256 clients (8 full batches: saturation — 64 were not,
  served throughput still rose from 64 to 128 to 256): served examples/s against the raw
  in-process throughput of the same artifact at the same batch size — the best of one batch on
  all cores and one or two batches per core side by side (each on one thread, as the server runs
  them) — alternated over five rounds (the median pair). "One full batch" is one batch on all cores.
  Target: ≥ 90 %.
- Latency under moderate load: open-loop runs at half of each model's saturation rate, three
  rounds, each right after a fresh measure of one full batch's compute time (in process, all
  cores); the round with the median ratio. Target: p99 ≤ 2 × the compute time of one full batch.
  For digits also one round at a quarter and one at an eighth of saturation: latency by load, and
  three rounds at half load of the same server with the model's forward taken out (the floor
  this machine, the server and the load generator put under any model's p99).
- The HTTP side alone: CPU per request of a Photon with no model (`lepton serve`) against a bare
  Starlette route on plain uvicorn (benchmarks/baselines/echo.py), and of the load generator.
- Every load test also reports the CPU a request cost the server (its whole process session) and
  the load generator: on this machine both share the cores the model would otherwise have.
  `--loadgen-cpus 12-15` keeps them apart on a machine with cores to spare: the load generator runs
  on those CPUs, and this process, every server it starts and the in-process references on the rest.

    python benchmarks/serve.py [--duration 20] [--only overhead|digits|minilm] [--skip-ray]
                               [--loadgen-cpus 12-15]

Writes benchmarks/results/serve.json and serve.png; the table goes to the terminal."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
BASELINES = Path(__file__).parent / "baselines"
console = Console()
# where the load generator runs (--loadgen-cpus); None: wherever this process does
LOADGEN_CPUS: set[int] | None = None


def raw_throughput(ref: str, inputs: Any, batch_size: int, threads: int | None = None) -> dict[str, float]:
    """Return the in-process throughput of the served artifact at `batch_size` (the limit a server can reach),
    on all cores or with `threads` compute threads."""
    import torch

    from lepton_ai.compress import load_runnable, measure

    runnable, before = load_runnable(ref), torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        with torch.inference_mode():
            m = measure(runnable, inputs, batch_size=batch_size, min_seconds=4.0, repeats=40)
    finally:
        torch.set_num_threads(before)
    return {
        "examples_per_s": m["throughput_per_s"],
        "batch_ms": 1000 * batch_size / m["throughput_per_s"],
        "batch_size": batch_size,
    }


def side_by_side(runnable: Any, batch: Any, threads: int, seconds: float = 3.0) -> float:
    """Return the in-process examples/s of `threads` threads each calling `runnable` on whole batches at
    once (how `lepton serve` runs an ONNX Runtime model: a batch per core, one compute thread each)."""
    import threading

    runnable(batch)
    done, stop = [0] * threads, time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            runnable(batch)
            done[i] += len(batch)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - t0)


def _session_cpu(sid: int) -> float:
    """Return the user + system CPU seconds used so far by the live processes of session `sid` (a server
    and every process it started: Ray's too)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == sid:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            # gone meanwhile
            pass
    return total


def measured_load(server: Any, payload: Any, **options: Any) -> dict[str, Any]:
    """Run a load test against a started server; add the CPU a request cost the server and the load
    generator (both on the same cores here, so both are taken from what the model could have had)."""
    from lepton_ai.serve.loadtest import load_test

    server_cpu, own_cpu = _session_cpu(server.proc.pid), time.process_time()
    result = load_test(server.url, payload, cpus=LOADGEN_CPUS, **options)
    server_cpu, own_cpu = _session_cpu(server.proc.pid) - server_cpu, time.process_time() - own_cpu
    # CPU counted over the warm-up too: per request sent, a slight overestimate
    sent = max(1, result["requests"])
    result["cpu_us_per_request"] = {
        "server": round(1e6 * server_cpu / sent, 1),
        "load_generator": round(1e6 * own_cpu / sent, 1),
    }
    return result


def loaded(
    label: str, server: Any, payload: Any, concurrency: int, duration: float, handler: str = "predict"
) -> dict[str, Any]:
    """Load a started server; return the load test's figures (printed as they come)."""
    with server:
        result = measured_load(
            server, payload, handler=handler, concurrency=concurrency, duration=duration, warmup=2.0
        )
        result["batch_mean"] = _mean_batch(server.url)
    lat = result["latency_ms"]
    cpu = result["cpu_us_per_request"]
    console.print(
        f"  {label:<34} {result['examples_per_s']:>9,.0f} ex/s   p50 {lat['p50']} ms   p99 {lat['p99']} ms"
        f"   errors {result['errors'] or 'none'}   CPU µs/request: server {cpu['server']:.0f}, "
        f"load generator {cpu['load_generator']:.0f}"
    )
    return result


def half_load(
    server: Any,
    payload: Any,
    rate: float,
    one_batch_ms: Callable[[], float],
    duration: float,
    rounds: int = 3,
) -> dict[str, Any]:
    """Open-loop rounds at `rate` on a started server, each right after a fresh measure of one full batch's
    compute time (this machine's speed drifts within minutes: benchmarks/RESULTS.md); return the round
    with the median p99 / batch ratio, and every round's figures."""
    runs = []
    for i in range(rounds):
        batch_ms = one_batch_ms()
        r = measured_load(server, payload, concurrency=256, duration=duration, warmup=2.0, rate=rate)
        r["batch_ms"], r["p99_vs_batch"] = batch_ms, r["latency_ms"]["p99"] / batch_ms
        runs.append(r)
        console.print(
            f"  open loop {rate:,.0f}/s, round {i + 1}: p50 {r['latency_ms']['p50']} ms, p99 "
            f"{r['latency_ms']['p99']} ms = {r['p99_vs_batch']:.2f} × one full batch ({batch_ms:.2f} ms)"
            f"   errors {r['errors'] or 'none'}"
        )
    middle = sorted(runs, key=lambda r: r["p99_vs_batch"])[rounds // 2]
    return {
        **middle,
        "rounds": [
            {"batch_ms": r["batch_ms"], "latency_ms": r["latency_ms"], "p99_vs_batch": r["p99_vs_batch"]}
            for r in runs
        ],
    }


def _mean_batch(url: str) -> float | None:
    """Return the mean batch size from a Lepton server's /metrics (None for servers without it)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    except OSError:
        return None
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("lepton_batch_size_sum", "lepton_batch_size_count"))
    }
    count = values.get("lepton_batch_size_count")
    return round(values["lepton_batch_size_sum"] / count, 1) if count else None


def _digits_saturated(ref: str, payload: Any, duration: float, skip_ray: bool) -> dict[str, dict[str, Any]]:
    """Load `lepton serve` (with and without a model process) and the baselines at 32 clients."""
    from lepton_ai.serve.server import ServerProcess

    def baseline(script: str, **options: Any) -> ServerProcess:
        return ServerProcess(
            [ref, "--port", "{port}"], command=[sys.executable, str(BASELINES / script)], **options
        )

    runs = {
        "lepton": loaded("lepton serve", ServerProcess([ref]), payload, 32, duration),
        "lepton_in_process": loaded(
            "lepton serve --no-model-process",
            ServerProcess([ref, "--no-model-process"]),
            payload,
            32,
            duration,
        ),
        "fastapi": loaded("plain FastAPI, per request", baseline("fastapi_server.py"), payload, 32, duration),
    }
    if not skip_ray:
        runs["ray"] = loaded(
            "Ray Serve, @serve.batch",
            baseline("ray_server.py", ready_path="/-/healthz", timeout=300),
            payload,
            32,
            duration,
        )
    return runs


def _digits_by_load(
    ref: str, payload: Any, saturation: float, one_batch_ms: Callable[[], float], duration: float
) -> tuple[dict[float, dict[str, Any]], dict[str, Any]]:
    """Open-loop latency at a half, a quarter and an eighth of `saturation` (requests/s), and the floor under
    the half-load p99: the same server and requests at the same rate, the model's forward taken out."""
    from lepton_ai.serve.server import ServerProcess

    # half load (the target), then where p99 meets it on this machine, if it does
    with ServerProcess([ref]) as server:
        by_load = {
            share: half_load(
                server, payload, saturation * share, one_batch_ms, duration, rounds=3 if share == 0.5 else 1
            )
            for share in (0.5, 0.25, 0.125)
        }
    with ServerProcess([f"{BASELINES / 'echo.py'}:NoCompute"], env={"LEPTON_NO_COMPUTE_REF": ref}) as server:
        console.print(
            "  the same, with the model's forward taken out (benchmarks/baselines/echo.py:NoCompute):"
        )
        floor = half_load(server, payload, by_load[0.5]["rate"], one_batch_ms, duration)
    return by_load, floor


def digits_case(duration: float, skip_ray: bool) -> dict[str, Any]:
    """The small CNN on digits: served against the baselines at saturation, then latency by load."""
    from lepton_ai.data import load
    from lepton_ai.serve.model import eager_threads
    from lepton_ai.train.job import train_and_register

    ref = train_and_register(
        "cnn-small", "digits", "digits-cnn", epochs=10, lr=3e-3, batch_size=64, progress=False
    ).ref
    test = load("digits", "test")
    # one 8×8 image per request
    payload = {"inputs": [test.features[0, 0].tolist()]}
    raw = raw_throughput(ref, test.features, 64)
    console.print(
        f"  raw in-process, batch 64: {raw['examples_per_s']:,.0f} ex/s ({raw['batch_ms']:.2f} ms a batch)"
    )
    runs = _digits_saturated(ref, payload, duration, skip_ray)
    best_other = max((k for k in runs if not k.startswith("lepton")), key=lambda k: runs[k]["examples_per_s"])
    ours, other = runs["lepton"], runs[best_other]

    def one_batch_ms() -> float:
        return raw_throughput(ref, test.features, 64)["batch_ms"]

    by_load, floor = _digits_by_load(ref, payload, ours["requests_per_s"], one_batch_ms, duration)
    half = by_load[0.5]
    curve = [
        {"load": share, **{k: r[k] for k in ("latency_ms", "batch_ms", "p99_vs_batch")}}
        for share, r in by_load.items()
    ]
    # For reference only (the target is against the batch on all cores): the batch as the model process
    # computes it, on the threads `lepton serve` gives it.
    served_batch_ms = raw_throughput(ref, test.features, 64, threads=eager_threads())["batch_ms"]
    per_example_us = 1e6 / raw["examples_per_s"]
    return {
        "ref": ref,
        "raw": raw,
        "runs": runs,
        "half_load": half,
        "best_baseline": best_other,
        "speedup_vs_best_baseline": ours["examples_per_s"] / other["examples_per_s"],
        "p99_vs_best_baseline": ours["latency_ms"]["p99"] / other["latency_ms"]["p99"],
        "model_process_vs_in_process": ours["examples_per_s"] / runs["lepton_in_process"]["examples_per_s"],
        "overhead_us_per_request": {k: 1e6 / r["requests_per_s"] - per_example_us for k, r in runs.items()},
        "half_load_p99_vs_batch": half["p99_vs_batch"],
        "load_curve": sorted(curve, key=lambda c: c["load"]),
        "half_load_no_compute": floor,
        "half_load_no_compute_p99_vs_batch": floor["p99_vs_batch"],
        "served_batch_ms": served_batch_ms,
        "served_threads": eager_threads(),
        "half_load_p99_vs_served_batch": half["latency_ms"]["p99"] / served_batch_ms,
    }


def minilm_case(duration: float, rounds: int = 5) -> dict[str, Any]:
    """Served against raw throughput of the optimized MiniLM, in `rounds` pairs measured back to
    back (this shared machine's speed drifts within minutes: benchmarks/RESULTS.md): the median of the
    per-pair ratios."""
    import statistics

    import torch

    from lepton_ai.compress import load_runnable, measure
    from lepton_ai.machine import cpu_info
    from lepton_ai.serve.server import ServerProcess

    job, sentence = _optimized_minilm()
    cores = cpu_info()["cores"]
    runnable, batch, payload = load_runnable(job.ref), [sentence] * 32, {"inputs": [sentence]}
    single = load_runnable(job.ref, threads=1)
    raws, raw_ways, served = [], [], []
    with ServerProcess([job.ref, "--max-batch-size", "32"]) as server:
        for r in range(rounds):
            ways = _raw_ways(runnable, single, batch, cores)
            raws.append(max(ways.values()))
            raw_ways.append(ways)
            served.append(measured_load(server, payload, concurrency=256, duration=duration / 2, warmup=1.0))
            _print_round(r, raws[-1], ways, served[-1])
        ratios = [x["examples_per_s"] / r for x, r in zip(served, raws)]
        # the round with the median ratio
        middle = sorted(range(rounds), key=lambda i: ratios[i])[rounds // 2]
        saturated, raw_eps = served[middle], raws[middle]
        rate = statistics.median(x["requests_per_s"] for x in served) / 2
        with torch.inference_mode():
            half = half_load(
                server,
                payload,
                rate,
                lambda: (
                    1000
                    * 32
                    / measure(runnable, batch, batch_size=32, min_seconds=3.0, repeats=24)["throughput_per_s"]
                ),
                duration,
            )
    # the time one batch takes alone
    one_batch = statistics.median(w["one batch, all cores"] for w in raw_ways)
    raw = {
        "examples_per_s": raw_eps,
        "batch_ms": 1000 * 32 / one_batch,
        "batch_size": 32,
        "rounds": raws,
        "ways": raw_ways,
    }
    return {
        "ref": job.ref,
        "candidate": job.result.report["best"]["name"],
        "raw": raw,
        "served": saturated,
        "served_rounds": [x["examples_per_s"] for x in served],
        "ratio_rounds": ratios,
        "half_load": half,
        "served_vs_raw": saturated["examples_per_s"] / raw_eps,
        "half_load_p99_vs_batch": half["p99_vs_batch"],
    }


def _optimized_minilm() -> tuple[Any, str]:
    """Optimize MiniLM for this machine (ONNX Runtime, int8) and register it; return the job and a sentence
    to send."""
    from lepton_ai.compress.job import optimize_and_register
    from lepton_ai.data import load

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    job = optimize_and_register(
        "minilm",
        "python-docs",
        name="minilm",
        report_dir=work,
        max_fidelity_drop=0.01,
        batch_size=32,
        techniques=("onnx", "int8"),
        time_budget_s=900,
    )
    sentence = load("python-docs", "test").texts[0]
    console.print(
        f"  optimized: {job.ref} ({job.result.report['best']['name']}); sentence: {sentence[:60]!r}…"
    )
    return job, sentence


def _raw_ways(runnable: Any, single: Any, batch: list[str], cores: int) -> dict[str, float]:
    """Return the in-process examples/s of one batch on all cores and of one or two batches per core side by
    side (the limit is the best of them)."""
    import torch

    from lepton_ai.compress import measure

    with torch.inference_mode():
        return {
            "one batch, all cores": measure(runnable, batch, batch_size=32, min_seconds=3.0, repeats=24)[
                "throughput_per_s"
            ],
            "a batch per core": side_by_side(single, batch, cores),
            "two batches per core": side_by_side(single, batch, 2 * cores),
        }


def _print_round(r: int, raw: float, ways: dict[str, float], served: dict[str, Any]) -> None:
    """Print one round of the MiniLM case: raw and served throughput, latency and CPU a request."""
    cpu = served["cpu_us_per_request"]
    console.print(
        f"  round {r + 1}: raw {raw:,.1f} ex/s ("
        + ", ".join(f"{k} {v:,.1f}" for k, v in ways.items())
        + f"), served {served['examples_per_s']:,.1f} ex/s "
        f"(p99 {served['latency_ms']['p99']} ms, errors {served['errors'] or 'none'}, "
        f"CPU µs/request: server {cpu['server']:.0f}, load generator {cpu['load_generator']:.0f})"
    )


def overhead_case(duration: float) -> dict[str, Any]:
    """CPU per request of the HTTP side alone (no model): a bare Starlette route on plain uvicorn
    against a Photon served by `lepton serve`, and of the load generator itself."""
    from lepton_ai.serve.server import ServerProcess

    servers = {
        "starlette_app": ServerProcess(
            ["--port", "{port}", "--log-level", "warning", "--no-access-log"],
            command=[sys.executable, "-m", "uvicorn", "echo:starlette_app"],
            env={"PYTHONPATH": str(BASELINES)},
        ),
        "lepton_app": ServerProcess([f"{BASELINES / 'echo.py'}:Echo"]),
    }
    out = {}
    for name, server in servers.items():
        with server:
            r = measured_load(server, {"inputs": [[0.0] * 64]}, concurrency=32, duration=duration, warmup=0)
        cpu = r["cpu_us_per_request"]
        out[name] = {
            "requests_per_s": r["requests_per_s"],
            "server_cpu_us_per_request": cpu["server"],
            "load_generator_cpu_us_per_request": cpu["load_generator"],
        }
        console.print(
            f"  {name:<14} {r['requests_per_s']:>9,.0f} requests/s   server CPU {cpu['server']:.0f} "
            f"µs/request   load generator {cpu['load_generator']:.0f} µs/request"
        )
    return out


def table(result: dict[str, Any]) -> None:
    mark = {True: "[green]met[/]", False: "[red]missed[/]"}
    if "digits" in result:
        d = result["digits"]
        t = Table(
            title="digits cnn-small, 1 example per request, concurrency 32 (same run, same load generator)",
            title_justify="left",
        )
        for c in ("server", "examples/s", "p50 ms", "p99 ms", "overhead µs/request", "mean batch", "errors"):
            t.add_column(c)
        for k, r in d["runs"].items():
            t.add_row(
                k,
                f"{r['examples_per_s']:,.0f}",
                str(r["latency_ms"]["p50"]),
                str(r["latency_ms"]["p99"]),
                f"{d['overhead_us_per_request'][k]:,.0f}",
                str(r.get("batch_mean") or "—"),
                str(r["errors"] or "none"),
            )
        console.print(t)
        ok = d["speedup_vs_best_baseline"] >= 1.5 and d["p99_vs_best_baseline"] <= 1.0
        console.print(
            f"  vs {d['best_baseline']}: ×{d['speedup_vs_best_baseline']:.2f} examples/s, "
            f"p99 ×{d['p99_vs_best_baseline']:.2f} (target ≥ ×1.5 at ≤ ×1.0) {mark[ok]}"
        )
        console.print(
            f"  the model in its own process: ×{d['model_process_vs_in_process']:.2f} examples/s against "
            "the model in the server's process"
        )
        h = d["half_load_p99_vs_batch"]
        console.print(
            f"  half load (median of {len(d['half_load']['rounds'])} rounds): p99 "
            f"{d['half_load']['latency_ms']['p99']} ms = {h:.2f} × one full batch "
            f"({d['half_load']['batch_ms']:.2f} ms; target ≤ 2) {mark[h <= 2]}"
        )
        console.print(
            f"  the floor under it, the same server at the same rate with the model's forward taken out:"
            f" p99 {d['half_load_no_compute']['latency_ms']['p99']} ms = "
            f"{d['half_load_no_compute_p99_vs_batch']:.2f} × one full batch"
        )
        console.print(
            "  p99 / one full batch by load: "
            + ", ".join(f"{c['load']:g} of saturation {c['p99_vs_batch']:.2f}" for c in d["load_curve"])
        )
        console.print(
            f"  for reference, not the target: half-load p99 = {d['half_load_p99_vs_served_batch']:.2f}"
            f" × one full batch as the model process computes it ({d['served_threads']} thread"
            f"{'s' if d['served_threads'] > 1 else ''}: {d['served_batch_ms']:.2f} ms)"
        )
    if "minilm" in result:
        m = result["minilm"]
        console.print(
            f"[bold]MiniLM ({m['candidate']})[/]: served {m['served']['examples_per_s']:,.1f} ex/s = "
            f"{m['served_vs_raw']:.1%} of raw {m['raw']['examples_per_s']:,.1f} (target ≥ 90 %) "
            f"{mark[m['served_vs_raw'] >= 0.9]}"
        )
        h = m["half_load_p99_vs_batch"]
        console.print(
            f"  half load (median of {len(m['half_load']['rounds'])} rounds): p99 "
            f"{m['half_load']['latency_ms']['p99']} ms = {h:.2f} × one full batch "
            f"({m['half_load']['batch_ms']:.1f} ms; target ≤ 2) {mark[h <= 2]}"
        )


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, curve = result["digits"]["runs"], result["digits"]["load_curve"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    names = list(runs)
    labels = [n.replace("_", "\n") for n in names]
    a.bar(
        labels,
        [runs[k]["examples_per_s"] for k in names],
        color=["#2a7", "#7c9", "#888", "#aaa"][: len(names)],
    )
    a.set_title("digits cnn-small: examples/s (higher is better)")
    for q, style in (("p50", "o-"), ("p99", "s--")):
        b.plot(labels, [runs[k]["latency_ms"][q] for k in names], style, label=q)
    b.set_yscale("log")
    b.set_title("latency at concurrency 32, ms (lower is better)")
    b.legend()
    loads = [x["load"] for x in curve]
    for q, style in (("p50", "o-"), ("p99", "s--")):
        c.plot(
            loads, [x["latency_ms"][q] / x["batch_ms"] for x in curve], style, label=f"{q} / one full batch"
        )
    c.axhline(2.0, color="#c33", lw=1, label="target for p99 at half load")
    c.set_xlabel("open-loop rate, fraction of saturation")
    c.set_title("lepton serve: latency by load")
    c.legend()
    fig.suptitle(result["machine_line"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds measured per load test.")
    parser.add_argument("--only", choices=("overhead", "digits", "minilm"))
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "serve.json"))
    parser.add_argument(
        "--loadgen-cpus",
        help="CPUs for the load generator alone (e.g. 12-15); the rest for the "
        "servers and the references. Default: all share all.",
    )
    args = parser.parse_args()
    # a registry of its own
    os.environ["LEPTON_HOME"] = tempfile.mkdtemp(prefix="lepton-serve-bench-")
    from lepton_ai.errors import LeptonError
    from lepton_ai.machine import describe, format_cpus, machine_info, parse_cpus

    global LOADGEN_CPUS
    if args.loadgen_cpus:
        try:
            LOADGEN_CPUS = parse_cpus(args.loadgen_cpus)
        except LeptonError as e:
            parser.error(f"--loadgen-cpus: {e}")
        rest = os.sched_getaffinity(0) - LOADGEN_CPUS
        if not rest:
            parser.error("--loadgen-cpus leaves no CPU for the servers")
        # before torch starts its threads and any server: they inherit it
        os.sched_setaffinity(0, rest)
    cpus = {
        "servers": format_cpus(os.sched_getaffinity(0)),
        "load_generator": format_cpus(LOADGEN_CPUS) if LOADGEN_CPUS else "shared",
    }
    info = machine_info()
    console.print(
        f"[bold]machine:[/] {describe(info)} · CPUs: servers {cpus['servers']}, "
        f"load generator {cpus['load_generator']}"
    )
    result: dict[str, Any] = {
        "machine": info,
        "machine_line": describe(info),
        "cpus": cpus,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.time(),
    }
    if args.only in (None, "overhead"):
        console.rule("[bold]the HTTP side alone (no model)")
        result["overhead"] = overhead_case(args.duration)
    if args.only in (None, "digits"):
        console.rule("[bold]digits cnn-small (overhead-bound)")
        result["digits"] = digits_case(args.duration, args.skip_ray)
    if args.only in (None, "minilm"):
        console.rule("[bold]MiniLM embeddings (compute-bound)")
        result["minilm"] = minilm_case(args.duration)
    table(result)
    write_json(args.out, result)
    console.print(f"wrote {args.out}")
    if "digits" in result:
        plot(result, Path(args.out).with_suffix(".png"))
        console.print(f"wrote {Path(args.out).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
