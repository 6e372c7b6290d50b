"""Data-parallel training benchmark (issue 6): `lepton train --nproc N` (torchrun + DDP, gloo on CPU)
against one process, on digits with `cnn-small` (10 epochs, batch 64 per process, lr 3e-3, seed 0).

For each configuration: the median epoch time (epochs after the first, which pays for warm-up), the
speed-up t1/tN over one process with every core, the scaling efficiency speed-up/N, and the test
accuracy against one process. Configurations run interleaved (1, 2, 1, 2, …) because a shared
machine's speed drifts by ±30 % within minutes; figures are medians over the rounds. A reference
row, one process on one thread, separates what a second core gives inside one process (intra-op
threads) from what it gives as a second DDP rank. On a machine with more cores: 1..8 CPU processes
(up to the core count); with CUDA: also one process on one GPU.

    python benchmarks/ddp.py [--rounds 5] [--epochs 10] [--procs 1,2,4] [--out benchmarks/results/ddp.json]

Writes benchmarks/results/ddp.json and ddp.png; the table goes to the terminal."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
# digits' train split
TRAIN_EXAMPLES = 1257
BATCH = 64
# the table whole in a log file too
console = Console(width=None if sys.stdout.isatty() else 140)


def configurations(procs: list[int], cuda: bool) -> list[dict[str, Any]]:
    """Return what to run: N CPU processes for each N, the 1-thread reference, and 1 GPU when present."""
    configs = [{"label": f"{n} proc", "nproc": n, "device": "cpu", "threads": None} for n in procs]
    configs.append({"label": "1 proc, 1 thread", "nproc": 1, "device": "cpu", "threads": 1})
    if cuda:
        configs.append({"label": "1 GPU", "nproc": 1, "device": "cuda", "threads": None})
    return configs


def run_once(config: dict[str, Any], epochs: int, home: str) -> dict[str, Any]:
    """Run `lepton train` once for `config`; return its JSON document's figures and the command's wall
    time."""
    # one process: torch's default, every core
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["LEPTON_HOME"] = home
    if config["threads"]:
        env["OMP_NUM_THREADS"] = str(config["threads"])
    name = "bench-" + config["label"].replace(" ", "").replace(",", "-")
    cmd = [
        sys.executable,
        *"-m lepton_ai.cli.main train --model cnn-small --data digits --name".split(),
        name,
        "--epochs",
        str(epochs),
        "--lr",
        "3e-3",
        "--batch-size",
        str(BATCH),
        "--seed",
        "0",
        "--device",
        config["device"],
        "--nproc",
        str(config["nproc"]),
        "--json",
    ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    doc = json.loads(r.stdout)
    later = doc["epoch_seconds"][1:] or doc["epoch_seconds"]
    return {
        "epoch_s": statistics.median(later),
        "epoch_seconds": doc["epoch_seconds"],
        "train_seconds": doc["train_seconds"],
        "accuracy": doc["metrics"]["accuracy"],
        "wall_s": wall,
        "world_size": doc["world_size"],
    }


def summarise(config: dict[str, Any], runs: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Return the medians over rounds for one configuration, and its steps."""
    n = config["nproc"]
    steps = math.ceil(math.ceil(TRAIN_EXAMPLES / n) / BATCH)
    epoch = statistics.median(r["epoch_s"] for r in runs)
    threads = config["threads"] or (max(1, cores // n) if config["device"] == "cpu" else None)
    return {
        **config,
        "threads_per_process": threads,
        "rounds": len(runs),
        "epoch_s": epoch,
        "epoch_s_min": min(r["epoch_s"] for r in runs),
        "epoch_s_max": max(r["epoch_s"] for r in runs),
        "steps_per_epoch": steps,
        "step_ms": 1e3 * epoch / steps,
        "samples_per_s": TRAIN_EXAMPLES / epoch,
        "accuracy": statistics.median(r["accuracy"] for r in runs),
        "accuracies": [r["accuracy"] for r in runs],
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "train_s": statistics.median(r["train_seconds"] for r in runs),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Epoch time and scaling efficiency against CPU processes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["device"] == "cpu" and not r["threads"]]
    n = [r["nproc"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.errorbar(
        n,
        [r["epoch_s"] for r in rows],
        fmt="o-",
        yerr=[
            [r["epoch_s"] - r["epoch_s_min"] for r in rows],
            [r["epoch_s_max"] - r["epoch_s"] for r in rows],
        ],
    )
    ref = next((r for r in result["rows"] if r["threads"] == 1), None)
    if ref:
        a.axhline(ref["epoch_s"], color="#aaa", ls=":", label="1 process, 1 thread")
        a.legend()
    a.set_xticks(n)
    a.set_ylim(bottom=0)
    a.set_xlabel("processes (DDP ranks)")
    a.set_ylabel("seconds per epoch (median; bars: min–max of rounds)")
    a.set_title("digits cnn-small: epoch time")
    b.plot(n, [r["efficiency"] for r in rows], "s-", color="#2a7")
    b.axhline(1.0, color="#aaa", ls="--", label="ideal")
    b.set_xticks(n)
    b.set_ylim(0, 1.2)
    b.set_xlabel("processes (DDP ranks)")
    b.set_title("scaling efficiency = (t1 / tN) / N")
    b.legend()
    fig.suptitle(result["machine_line"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds over all configurations.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--procs", help="CPU process counts, e.g. 1,2,4. Default: 1..min(8, cores).")
    parser.add_argument("--out", default=str(RESULTS / "ddp.json"))
    args = parser.parse_args()
    import torch

    from lepton_ai.machine import describe, machine_info

    info = machine_info()
    cores = info["cpu"]["cores"]
    procs = [int(p) for p in args.procs.split(",")] if args.procs else list(range(1, min(8, cores) + 1))
    if 1 not in procs:
        # the baseline every ratio is taken against
        procs.insert(0, 1)
    configs = configurations(procs, torch.cuda.is_available())
    console.print(f"[bold]machine:[/] {describe(info)}")
    # a registry of its own
    home = tempfile.mkdtemp(prefix="lepton-ddp-bench-")
    runs: dict[str, list[dict[str, Any]]] = {c["label"]: [] for c in configs}
    for round_ in range(args.rounds):
        # interleaved: each round runs every configuration once
        for c in configs:
            r = run_once(c, args.epochs, home)
            runs[c["label"]].append(r)
            console.print(
                f"round {round_ + 1}/{args.rounds} · {c['label']:>16}: {r['epoch_s'] * 1e3:6.1f} ms/epoch, "
                f"accuracy {r['accuracy']:.4f}, command {r['wall_s']:.1f} s"
            )
    rows = [summarise(c, runs[c["label"]], cores) for c in configs]
    base = next(r for r in rows if r["label"] == "1 proc")
    for r in rows:
        r["speedup"] = base["epoch_s"] / r["epoch_s"]
        r["efficiency"] = r["speedup"] / r["nproc"]
        r["accuracy_vs_1"] = r["accuracy"] - base["accuracy"]
    result = {
        "machine": info,
        "machine_line": describe(info),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setup": {
            "model": "cnn-small",
            "data": "digits",
            "epochs": args.epochs,
            "batch_per_process": BATCH,
            "lr": 3e-3,
            "seed": 0,
            "rounds": args.rounds,
            "backend": "gloo (CPU)",
        },
        "rows": rows,
        "runs": runs,
    }
    t = Table(
        title=f"digits cnn-small, {args.epochs} epochs, batch {BATCH} per process: medians of {args.rounds} "
        "interleaved rounds",
        title_justify="left",
    )
    for col in (
        "configuration",
        "threads/proc",
        "steps/epoch",
        "epoch ms",
        "step ms",
        "samples/s",
        "speed-up",
        "efficiency",
        "test acc",
        "Δ acc vs 1",
        "command s",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            r["label"],
            str(r["threads_per_process"] or "-"),
            str(r["steps_per_epoch"]),
            f"{r['epoch_s'] * 1e3:.1f}",
            f"{r['step_ms']:.2f}",
            f"{r['samples_per_s']:,.0f}",
            f"{r['speedup']:.2f}",
            f"{r['efficiency']:.2f}",
            f"{r['accuracy']:.4f}",
            f"{100 * r['accuracy_vs_1']:+.2f} pt",
            f"{r['wall_s']:.1f}",
        )
    console.print(t)
    write_json(args.out, result)
    console.print(f"wrote {args.out}")
    plot(result, Path(args.out).with_suffix(".png"))
    console.print(f"wrote {Path(args.out).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
