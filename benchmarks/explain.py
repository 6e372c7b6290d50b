"""Explanations benchmark (issue 27): how faithful Integrated Gradients and Saliency are on a digits CNN, how
fast `/explain` serves them against the same explanations computed in process, and how far a compressed
version's explanations agree with the original's, in one run.

- Faithfulness, 200 test images, IG (32 steps): the deletion curve's area (the predicted class's probability
  as the most attributed pixels are blanked first) / the same in a random order (≤ 0.6 asked); the
  randomised-weights rank correlation (Adebayo et al.; signed, tied ranks averaged) for IG and Saliency (≤ 0.3
  asked), and on magnitudes (reported).
- Serving: `lepton serve` (a child process) answering `POST /explain` (IG, 32 steps, 16 images a request,
  new images each time: no cache hit) against `lepton_ai.explain.explain` on the same batches in this process
  on the threads `lepton serve` gives the model (all cores but the event loop's); after a warm-up request;
  interleaved rounds, the ratio's median and spread. The server's throughput (≥ 0.8 asked) is taken with two
  requests in flight, so that the model computes one while the other travels; one request at a time (the
  round trip's latency) is reported too.
- IG's forward passes: the whole path of 16 images at once (512 rows) against the default passes of
  `PASS_VALUES` inputs (128 rows of 8×8), one thread, in a fresh process (as a model process is),
  interleaved.
- Compression: `optimize` (ONNX and int8) on the same model; each candidate's attribution agreement.

    python benchmarks/explain.py [--rounds 5] [--requests 12]

Writes benchmarks/results/explain.json; the tables go to the terminal."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch
from common import train_digits_cnn, write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)
BATCH, STEPS = 16, 32


def faithfulness_case(model: Any, images: torch.Tensor) -> dict[str, Any]:
    """IG's faithfulness scores, and Saliency's sanity check, on `images`."""
    from lepton_ai.explain import explain, faithfulness
    from lepton_ai.explain.scores import randomised_correlation

    ig = explain(model, images, "ig", steps=STEPS)
    scores = faithfulness(model, images, ig).to_dict()
    saliency = explain(model, images, "saliency")
    signed, magnitudes = randomised_correlation(model, images, saliency)
    return {
        "ig": scores,
        "saliency": {"randomised_correlation": signed, "randomised_correlation_abs": magnitudes},
    }


def serving_case(model: Any, ref: str, images: torch.Tensor, rounds: int, requests: int) -> dict[str, Any]:
    """Explanations per second served (one request at a time, and two in flight) and in process, interleaved
    `rounds` times."""
    from lepton_ai.device import torch_threads
    from lepton_ai.explain import explain
    from lepton_ai.serve.model import eager_threads
    from lepton_ai.serve.server import ServerProcess

    rates: dict[str, list[float]] = {"sequential": [], "two_in_flight": [], "in_process": []}
    with ServerProcess([ref]) as server, httpx.Client(timeout=120) as client:

        def ask(x: torch.Tensor) -> None:
            reply = client.post(f"{server.url}/explain", json={"inputs": x.tolist(), "steps": STEPS})
            reply.raise_for_status()

        # Captum's import and the first call's allocations, in both processes, are not counted
        ask(images[-BATCH:])
        explain(model, images[-BATCH:], "ig", steps=STEPS)
        for r in range(rounds):
            # new inputs for each request: nothing comes from the cache
            shifts = iter(1e-3 * (3 * r * requests + n + 1) for n in range(3 * requests))
            batches = [images[(i * BATCH) % 184 :][:BATCH] for i in range(requests)]
            start = time.perf_counter()
            for x in batches:
                ask(x + next(shifts))
            rates["sequential"].append(requests * BATCH / (time.perf_counter() - start))
            start = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(ask, [x + next(shifts) for x in batches]))
            rates["two_in_flight"].append(requests * BATCH / (time.perf_counter() - start))
            start = time.perf_counter()
            # on the threads `lepton serve` gives the model (a core stays with the event loop)
            with torch_threads(eager_threads()):
                for x in batches:
                    explain(model, x + next(shifts), "ig", steps=STEPS)
            rates["in_process"].append(requests * BATCH / (time.perf_counter() - start))
            figures = " · ".join(f"{how} {each[-1]:.1f}/s" for how, each in rates.items())
            console.print(f"  round {r + 1}: {figures}")
    local = rates["in_process"]
    result: dict[str, Any] = {"rounds": rates, "in_process_per_s": statistics.median(local)}
    for how in ("sequential", "two_in_flight"):
        ratios = [s / loc for s, loc in zip(rates[how], local)]
        result[how] = {
            "per_s": statistics.median(rates[how]),
            "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        }
    return result


def pass_case(ref: str, images: torch.Tensor) -> dict[str, Any]:
    """IG's time for 16 images on one thread in a fresh process (as a model process is): the whole path in one
    forward pass against passes of `PASS_VALUES` inputs (the default), interleaved."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        times: dict[str, list[float]] = pool.apply(pass_times, (ref, images[:BATCH]))
    ratios = [one / default for one, default in zip(times["one_pass"], times["default"])]
    return {
        "ms": {how: 1e3 * statistics.median(each) for how, each in times.items()},
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
    }


def pass_times(ref: str, x: torch.Tensor, repeats: int = 15) -> dict[str, list[float]]:
    """Seconds of each explanation of `x` by the model `ref`, in one pass and in the default ones."""
    from lepton_ai.explain import explain
    from lepton_ai.models import LeptonModel

    model = LeptonModel.load(ref).eval()
    times: dict[str, list[float]] = {"one_pass": [], "default": []}
    torch.set_num_threads(1)
    for _ in range(repeats):
        for how, rows in (("one_pass", BATCH * STEPS), ("default", None)):
            start = time.perf_counter()
            explain(model, x, "ig", steps=STEPS, batch_size=rows)
            times[how].append(time.perf_counter() - start)
    return times


def compression_case(model: Any, test: Any) -> list[dict[str, Any]]:
    """Each candidate of a quick optimize: its accuracy and its attribution agreement with the baseline."""
    from lepton_ai.compress import optimize

    with tempfile.TemporaryDirectory() as tmp:
        result = optimize(
            model, test, techniques=("onnx", "int8", "pytorch-int8"), workdir=tmp, progress=False
        )
    return [
        {k: t[k] for k in ("name", "accuracy", "attribution_agreement", "accepted", "reason")}
        for t in result.report["trials"]
    ]


def report(result: dict[str, Any]) -> None:
    """Print the figures against what issue 27 asks."""
    f, s, p = result["faithfulness"], result["serving"], result["passes"]
    t = Table(title=f"explanations benchmark · {result['machine']}", title_justify="left")
    for column in ("figure", "value", "asked"):
        t.add_column(column)
    t.add_row("IG deletion AUC / random-order AUC", f"{f['ig']['deletion_ratio']:.3f}", "≤ 0.6")
    t.add_row("IG randomised-weights correlation", f"{f['ig']['randomised_correlation']:.3f}", "≤ 0.3")
    t.add_row(
        "Saliency randomised-weights correlation", f"{f['saliency']['randomised_correlation']:.3f}", "≤ 0.3"
    )
    for how, asked in (("two_in_flight", "≥ 0.8"), ("sequential", "reported")):
        ratio = s[how]["ratio"]
        t.add_row(
            f"served /explain ÷ in process, explanations/s ({how.replace('_', ' ')})",
            f"{ratio['median']:.3f} ({ratio['min']:.3f}–{ratio['max']:.3f})",
            asked,
        )
    t.add_row(
        "IG time in a fresh process, one pass of 512 rows ÷ passes of 128 (16 images)",
        f"{p['ratio']['median']:.2f} ({p['ratio']['min']:.2f}–{p['ratio']['max']:.2f}; "
        f"{p['ms']['one_pass']:.1f} against {p['ms']['default']:.1f} ms)",
        "reported",
    )
    console.print(t)
    for trial in result["compression"]:
        agreement = trial["attribution_agreement"]
        console.print(f"  {trial['name']:<28} accuracy {trial['accuracy']:.4f} · agreement {agreement:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS / "explain.json")
    args = parser.parse_args()
    from lepton_ai.machine import describe, machine_info

    info = machine_info()
    result: dict[str, Any] = {"machine": describe(info), "machine_info": info, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="lepton-bench-explain-") as home:
        os.environ["LEPTON_HOME"] = home
        model, _, (_, _, test) = train_digits_cnn(10)
        model.eval()
        ref = model.save("digits-explain")
        images = test.features[:200]
        result["faithfulness"] = faithfulness_case(model, images)
        result["passes"] = pass_case(ref, images)
        result["serving"] = serving_case(model, ref, images, args.rounds, args.requests)
        result["compression"] = compression_case(model, test)
    report(result)
    write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
