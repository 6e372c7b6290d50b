"""Does `optimize` give the same answer twice? (issue 29) The same search on one model, run several times in
a row on this machine: how often each recipe won, the spread of the headline speedup (max ÷ min) and the
size reduction each time. Digits `cnn-small` (trained here): the same recipe at least 4 times in 5, max ÷ min
≤ 1.3, ≥ ÷4 every time. MiniLM embeddings (batch 32, sequence 128): ≥ ×2.5 at a mean cosine drop ≤ 0.01 and
≥ ÷3.5, in at least 4 runs of 5.

    python benchmarks/compress_repeat.py [--case digits|minilm] [--runs 5] [--budget 900] [--avx2-only]

`--avx2-only` runs it as on a CPU with AVX2 and nothing wider (see common.as_avx2_only). For MiniLM each run
also measures the chosen candidate on sentences that fill all 128 tokens, where no padding is left to skip.
Writes benchmarks/results/compress_repeat[-minilm][-avx2].json; the table goes to the terminal."""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from common import as_avx2_only, full_length_speedup, train_digits_cnn, write_json
from rich.console import Console
from rich.table import Table

from lepton_ai import LeptonModel
from lepton_ai.compress import optimize
from lepton_ai.data import load
from lepton_ai.machine import describe, machine_info

RESULTS = Path(__file__).parent / "results"


class Case(NamedTuple):
    """A model to search, its data and options, and what each run must reach."""

    model: LeptonModel
    test: Any
    options: dict[str, Any]
    speedup: float
    size: float
    # how many of the runs must reach them
    asked: str


def digits() -> Case:
    model, _, (train, val, test) = train_digits_cnn(epochs=10)
    options = {"calib_data": val, "train_data": train, "max_accuracy_drop": 0.01, "batch_size": 64}
    return Case(model, test, options, 1.0, 4.0, "every run")


def minilm() -> Case:
    model = LeptonModel(num_classes=0).load_pretrained_model("minilm")
    train, test = load("python-docs", "train"), load("python-docs", "test")
    options = {"train_data": train, "max_fidelity_drop": 0.01, "batch_size": 32, "seq_len": 128}
    return Case(model, test, options, 2.5, 3.5, "≥ 4 of 5")


def run(case: Case, runs: int, budget: float) -> list[dict[str, Any]]:
    """Return the headline figures of `runs` searches on the case's model."""
    figures = []
    for n in range(runs):
        with tempfile.TemporaryDirectory() as work:
            result = optimize(
                case.model, case.test, time_budget_s=budget, workdir=work, progress=False, **case.options
            )
            r = result.report
        figures.append(
            {
                "best": r["best"]["name"],
                "speedup": r["speedup"],
                "speedup_range": r["speedup_range"],
                "size_reduction": r["size_reduction"],
                f"{r['metric']}_drop": r[f"{r['metric']}_drop"],
                "met": r["speedup"] >= case.speedup
                and r["size_reduction"] >= case.size
                and r[f"{r['metric']}_drop"] <= 0.01,
                "baseline_per_s": r["baseline"]["throughput_per_s"],
                "tied": r["choice"]["tied"],
                "fastest_share": r["choice"]["fastest_share"],
                "rounds": r["settled"]["rounds"],
                **(
                    {
                        "full_length_speedup": full_length_speedup(
                            case.model, result.best, list(case.test.texts)
                        )
                    }
                    if case.model.is_text
                    else {}
                ),
            }
        )
        low, high = r["speedup_range"]
        Console().print(
            f"  run {n + 1}: {r['best']['name']} ×{r['speedup']:.2f} ({low:.2f}–{high:.2f}), "
            f"÷{r['size_reduction']:.2f}, tied {r['choice']['tied']}"
        )
    return figures


def summary(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Return how often each recipe won, the speedups' max ÷ min and the smallest size reduction."""
    wins = collections.Counter(f["best"] for f in figures)
    speedups = [f["speedup"] for f in figures]
    return {
        "wins": dict(wins),
        "same_recipe": wins.most_common(1)[0][1],
        "speedup_max_over_min": max(speedups) / min(speedups),
        "speedup_min": min(speedups),
        "speedup_max": max(speedups),
        "size_reduction_min": min(f["size_reduction"] for f in figures),
        "met": sum(f["met"] for f in figures),
        **(
            {"full_length_speedups": [f["full_length_speedup"]["median"] for f in figures]}
            if "full_length_speedup" in figures[0]
            else {}
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=("digits", "minilm"), default="digits")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=900, help="seconds each search may take")
    parser.add_argument("--out", type=Path, help="default: results/compress_repeat[-minilm].json")
    parser.add_argument("--avx2-only", action="store_true", help="run as on a CPU without AVX-512 or AMX")
    args = parser.parse_args()
    info = as_avx2_only(machine_info()) if args.avx2_only else machine_info()
    case = {"digits": digits, "minilm": minilm}[args.case]()
    figures = run(case, args.runs, args.budget)
    s = summary(figures)
    t = Table(title=f"optimize, {args.runs} runs in a row · {describe(info)}", title_justify="left")
    for column in ("figure", "value", "asked"):
        t.add_column(column)
    t.add_row("the same recipe chosen", f"{s['same_recipe']} of {args.runs} ({s['wins']})", "≥ 4 of 5")
    t.add_row(
        "headline speedup, max ÷ min",
        f"{s['speedup_max_over_min']:.2f} (×{s['speedup_min']:.2f}–×{s['speedup_max']:.2f})",
        "≤ 1.3",
    )
    t.add_row("size reduction, smallest", f"÷{s['size_reduction_min']:.2f}", f"≥ ÷{case.size:g}")
    t.add_row(
        f"runs at ≥ ×{case.speedup:g} and ≥ ÷{case.size:g} (quality bar held)",
        f"{s['met']} of {args.runs}",
        case.asked,
    )
    if "full_length_speedups" in s:
        full = s["full_length_speedups"]
        t.add_row("on sentences filling 128 tokens (no padding)", f"×{min(full):.2f}–×{max(full):.2f}", "")
    Console().print(t)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    suffix = ("" if args.case == "digits" else f"-{args.case}") + ("-avx2" if args.avx2_only else "")
    out = args.out or RESULTS / f"compress_repeat{suffix}.json"
    write_json(out, {"machine": info, "case": args.case, "command": command, "runs": figures, "summary": s})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
