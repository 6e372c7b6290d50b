"""Federated-learning benchmark (issue 7), on the digits test split, with `lepton fl run`'s defaults
(cnn-small, clients: 2 epochs of SGD with momentum, lr 0.05 decayed along a cosine over the rounds).

- `fedavg`, `fedprox`: 10 clients, Dirichlet α=0.1, 30 rounds; target accuracy ≥ 0.97 (each seed
  also draws the data split and the partition; the figure is the final global model's, not the best round's).
- `client-dp`: client-level DP-FedAvg, 100 clients, ε = 8, δ = 1e-5; accuracy reported (no bar yet).
  Tuned on 100 clients: every client each round, few rounds of long local training and a constant lr
  (σ·C of noise on the sum does not shrink with the updates) beat sampling 10–30 % over 30–100 rounds.
- `scale`: 1,000 clients, 10 % sampled per round, 5 rounds; target wall time < 300 s (2 cores).

    python benchmarks/federated.py [--only fedavg,scale] [--seeds 3] [--out benchmarks/results/federated.json]

CASES maps each name to a function returning its figures (a JSON-ready dict); every case run is
written into the one JSON file, keeping the sections of the cases not run."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common import write_json

RESULTS = Path(__file__).parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(seed: int, **options: Any) -> dict[str, Any]:
    """One simulation as `lepton fl run` runs it; return its figures."""
    from lepton_ai.privacy import federated

    t0, c0 = time.perf_counter(), _cpu_seconds()
    r = federated.federated_train(data="digits", seed=seed, progress=False, name=f"bench-fl-{seed}", **options)
    return {"seed": seed, "accuracy": r.metrics["accuracy"], "loss": r.metrics["loss"],
            "best_round_accuracy": max(row["accuracy"] for row in r.history),
            "accuracy_by_round": [round(row["accuracy"], 4) for row in r.history],
            "epsilon": r.privacy["epsilon"] if r.privacy else None,
            "noise_multiplier": r.privacy["noise_multiplier"] if r.privacy else None,
            "wall_seconds": time.perf_counter() - t0, "cpu_seconds": _cpu_seconds() - c0}


def _over_seeds(seeds: int, **options: Any) -> dict[str, Any]:
    from lepton_ai.privacy.federated import DEFAULTS

    runs = []
    for seed in range(seeds):
        runs.append(_run(seed, **options))
        console.print(f"  seed {seed}: accuracy {runs[-1]['accuracy']:.4f} · {runs[-1]['wall_seconds']:.1f} s")
    accs = [r["accuracy"] for r in runs]
    return {"options": {**DEFAULTS, **options}, "accuracy": accs[0], "accuracy_mean": statistics.mean(accs),
            "accuracy_min": min(accs), "accuracy_max": max(accs), "seeds": seeds,
            "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in runs), "runs": runs}


def fedavg(seeds: int = 3) -> dict[str, Any]:
    """FedAvg, 10 clients, Dirichlet α=0.1, 30 rounds."""
    out = _over_seeds(seeds, clients=10, rounds=30, partition="dirichlet:0.1", strategy="fedavg")
    return {**out, "target_accuracy": 0.97, "met": out["accuracy_min"] >= 0.97}


def fedprox(seeds: int = 3) -> dict[str, Any]:
    """FedProx (μ = 0.01), 10 clients, Dirichlet α=0.1, 30 rounds."""
    out = _over_seeds(seeds, clients=10, rounds=30, partition="dirichlet:0.1", strategy="fedprox:0.01")
    return {**out, "target_accuracy": 0.97, "met": out["accuracy_min"] >= 0.97}


def client_dp(seeds: int = 3) -> dict[str, Any]:
    """Client-level DP-FedAvg, ε = 8, δ = 1e-5: 100 clients (IID), all of them in each of 20 rounds, 5 local
    epochs, constant lr, updates clipped to norm 1 (mlp: the default under DP)."""
    out = _over_seeds(seeds, clients=100, rounds=20, partition="iid", fraction=1.0, local_epochs=5,
                      dp={"epsilon": 8.0, "delta": 1e-5, "clip": 1.0})
    eps = max(r["epsilon"] for r in out["runs"])
    return {**out, "epsilon_spent_max": eps, "target_epsilon": 8.0, "met": eps <= 8.0}


def scale(seeds: int = 1) -> dict[str, Any]:
    """1,000 clients (IID: one or two examples each), 10 % per round, 5 rounds: wall time."""
    out = _over_seeds(1, clients=1000, rounds=5, partition="iid", fraction=0.1)
    wall = out["runs"][0]["wall_seconds"]
    return {**out, "wall_seconds": wall, "cpu_seconds": out["runs"][0]["cpu_seconds"], "target_seconds": 300.0,
            "threads": _threads(), "met": wall < 300.0}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


CASES: dict[str, Callable[..., dict[str, Any]]] = {"fedavg": fedavg, "fedprox": fedprox, "client-dp": client_dp,
                                                   "scale": scale}


def _row(name: str, r: dict[str, Any]) -> tuple[str, ...]:
    verdict = "[green]met[/]" if r["met"] else "[red]missed[/]"
    if name == "scale":
        return name, f"{r['wall_seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU", "< 300 s", verdict
    figure = f"{r['accuracy']:.4f} (seed 0); mean {r['accuracy_mean']:.4f}, min {r['accuracy_min']:.4f}"
    if name == "client-dp":
        return name, f"{figure}; ε spent {r['epsilon_spent_max']:.3f}", "ε ≤ 8 (accuracy: no bar)", verdict
    return name, figure, "≥ 0.97", verdict


def main() -> int:
    from lepton_ai.machine import describe, machine_info

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(CASES), help="Comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "federated.json"))
    args = parser.parse_args()
    os.environ.setdefault("LEPTON_HOME", tempfile.mkdtemp(prefix="lepton-bench-fl-"))  # not the user's registry
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}: choose from {', '.join(CASES)}")
    out = Path(args.out)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    info = machine_info()
    console.print(f"[bold]machine:[/] {describe(info)}")
    doc.update({"machine": info, "command": " ".join([Path(sys.executable).name, *sys.argv])})
    for name in names:
        console.print(f"[bold]{name}[/]: {CASES[name].__doc__}")
        doc[name] = CASES[name](seeds=args.seeds)
        write_json(out, doc)
    table = Table(title="Federated learning on digits (test split)", title_justify="left")
    for c in ("case", "figure", "target", "verdict"):
        table.add_column(c)
    for name in CASES:
        if name in doc:
            table.add_row(*_row(name, doc[name]))
    console.print(table)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
