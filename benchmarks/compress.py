"""Compression benchmark (issue 4): `optimize` on two models, every figure a ratio against
eager fp32 PyTorch of the same model measured in the same run on the same machine.

- digits `cnn-small` (trained here, 10 epochs as in the training benchmark): throughput at
  batch 64, size and test accuracy. Targets: ≥ 3× throughput, ≥ 4× smaller, drop ≤ 1 point.
- all-MiniLM-L6-v2 sentence embeddings (mean pooled, normalised), batch 32, sequence 128:
  throughput, size and mean cosine to the fp32 embeddings on held-out real sentences (the
  test split of `python-docs`). Targets: ≥ 2.5×, ≥ 3.5× smaller, cosine ≥ 0.99.

Each search's report (json, md, png) is written under benchmarks/results/compress-*/.

MiniLM's best is also measured on sentences that fill all 128 tokens (no padding for length-aware
batching to skip). `--avx2-only` runs it as on a CPU with AVX2 and nothing wider (common.as_avx2_only).

    python benchmarks/compress.py [--only digits|minilm] [--techniques onnx,int8,...] [--budget 900]
        [--avx2-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from common import as_avx2_only, full_length_speedup, train_digits_cnn, write_json
from rich.console import Console
from rich.table import Table

from lepton_ai import LeptonModel
from lepton_ai.compress import TECHNIQUES, OptimizeResult, optimize
from lepton_ai.data import load
from lepton_ai.machine import describe, machine_info

RESULTS = Path(__file__).parent / "results"
TARGETS = {
    "digits": {"speedup": 3.0, "size_reduction": 4.0, "max_drop": 0.01},
    "minilm": {"speedup": 2.5, "size_reduction": 3.5, "max_drop": 0.01},
}


def digits_case(techniques: tuple[str, ...], budget: float, out: Path) -> dict[str, Any]:
    """Train cnn-small on digits, then optimize it within 1 point of test accuracy."""
    model, _, (train, val, test) = train_digits_cnn(epochs=10)
    options = {"calib_data": val, "max_accuracy_drop": 0.01, "batch_size": 64}
    return _search(out, model, test, train, techniques, budget, **options).report


def minilm_case(techniques: tuple[str, ...], budget: float, out: Path) -> dict[str, Any]:
    """Optimize all-MiniLM-L6-v2 embeddings within 0.01 of mean cosine on held-out sentences."""
    model = LeptonModel(num_classes=0).load_pretrained_model("minilm")
    train, test = load("python-docs", "train"), load("python-docs", "test")
    options = {"max_fidelity_drop": 0.01, "batch_size": 32, "seq_len": 128}
    result = _search(out, model, test, train, techniques, budget, **options)
    result.report["full_length_speedup"] = full_length_speedup(model, result.best, list(test.texts))
    return result.report


def _search(
    out: Path,
    model: LeptonModel,
    test: Any,
    train: Any,
    techniques: tuple[str, ...],
    budget: float,
    **options: Any,
) -> OptimizeResult:
    """Run the search, save its report into `out` and return its result."""
    workdir = RESULTS / f"work-{out.name}"
    result = optimize(
        model, test, train_data=train, techniques=techniques, time_budget_s=budget, workdir=workdir, **options
    )
    result.save(out)
    return result


def verdict(report: dict[str, Any], target: dict[str, float]) -> dict[str, Any]:
    """Return each headline figure with its target and whether it was met."""
    drop = report[f"{report['metric']}_drop"]
    return {
        "speedup": [report["speedup"], target["speedup"], report["speedup"] >= target["speedup"]],
        "size_reduction": [
            report["size_reduction"],
            target["size_reduction"],
            report["size_reduction"] >= target["size_reduction"],
        ],
        f"{report['metric']}_drop": [drop, target["max_drop"], drop <= target["max_drop"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("digits", "minilm"))
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--budget", type=float, default=900, help="seconds each search may take")
    parser.add_argument("--out", help="default: results/compress[-avx2].json")
    parser.add_argument("--avx2-only", action="store_true", help="run as on a CPU without AVX-512 or AMX")
    args = parser.parse_args()
    techniques = tuple(t for t in args.techniques.split(",") if t)
    console = Console()
    info = as_avx2_only(machine_info()) if args.avx2_only else machine_info()
    args.out = args.out or RESULTS / f"compress{'-avx2' if args.avx2_only else ''}.json"
    console.print(
        f"[bold]machine:[/] {describe(info)} · torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    result: dict[str, Any] = {
        "machine": info,
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    cases = {"digits": digits_case, "minilm": minilm_case}
    for key, run in cases.items():
        if args.only and key != args.only:
            continue
        console.rule(f"[bold]{key}")
        report = run(techniques, args.budget, RESULTS / f"compress-{key}{'-avx2' if args.avx2_only else ''}")
        result[key] = {"verdict": verdict(report, TARGETS[key]), "report": report}
        t = Table(
            title=f"{key}: best = {report['best']['name']} (against eager fp32, same run)",
            title_justify="left",
        )
        for c in ("figure", "baseline", "best", "ratio / change", "target", ""):
            t.add_column(c)
        base, best, metric = report["baseline"], report["best"], report["metric"]
        v = result[key]["verdict"]
        mark = {True: "[green]met[/]", False: "[red]missed[/]"}
        t.add_row(
            f"throughput/s (batch {report['batch_size']})",
            f"{base['throughput_per_s']:,.1f}",
            f"{best['throughput_per_s']:,.1f}",
            f"×{report['speedup']:.2f}",
            f"≥ ×{v['speedup'][1]}",
            mark[v["speedup"][2]],
        )
        t.add_row(
            "size (MB)",
            f"{base['size_bytes'] / 1e6:.3f}",
            f"{best['size_bytes'] / 1e6:.3f}",
            f"÷{report['size_reduction']:.2f}",
            f"≥ ÷{v['size_reduction'][1]}",
            mark[v["size_reduction"][2]],
        )
        t.add_row(
            metric,
            f"{base[metric]:.4f}",
            f"{best[metric]:.4f}",
            f"{best[metric] - base[metric]:+.4f}",
            f"drop ≤ {v[f'{metric}_drop'][1]}",
            mark[v[f"{metric}_drop"][2]],
        )
        t.add_row(
            "latency p50, batch 1 (ms)",
            f"{base['latency_ms_p50']:.3f}",
            f"{best['latency_ms_p50']:.3f}",
            f"×{report['latency_speedup']:.2f}",
            "",
            "",
        )
        if "full_length_speedup" in report:
            full = report["full_length_speedup"]
            t.add_row("throughput, 128 real tokens each", "", "", f"×{full['median']:.2f}", "", "")
        console.print(t)
    write_json(args.out, result)
    console.print(f"wrote {args.out} and the reports in {RESULTS}/compress-*/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
