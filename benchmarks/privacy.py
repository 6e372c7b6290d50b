"""Privacy benchmark (issue 7): differential privacy and federated learning on the digits test split.

Case `dp` — sample-level differential privacy: the `mlp` on digits trained as `lepton train` trains it,
without privacy (its defaults: 10 epochs, batch 64, lr 3e-3) and with DP-SGD at each ε (δ = 1e-5) as
`lepton train --dp-epsilon ε --dp-delta 1e-5` does (the DP defaults: epochs, batch size and lr of
`lepton_ai.privacy.defaults.DP_TRAINING_DEFAULTS`), over several seeds (each seed also draws the data split).
Reports test accuracy (mean and min over seeds), the ε the RDP accountant states was spent, the noise
multiplier Opacus calibrated, and training time. Target: ε ≤ 3 → accuracy ≥ 0.90.

Federated cases, with `lepton fl run`'s defaults (cnn-small; clients: 2 epochs of SGD with momentum, lr 0.05
decayed along a cosine over the rounds); each seed also draws the split and the partition, and the figure
is the final global model's, not the best round's:
- `fedavg`, `fedprox`: 10 clients, Dirichlet α=0.1, 30 rounds; target accuracy ≥ 0.97.
- `client-dp`: client-level DP-FedAvg, 100 clients, ε = 8, δ = 1e-5; accuracy reported (no bar yet).
  Tuned on 100 clients: every client each round, few rounds of long local training and a constant lr
  (σ·C of noise on the sum does not shrink with the updates) beat sampling 10–30 % over 30–100 rounds.
- `scale`: 1,000 clients, 10 % sampled per round, 5 rounds; target wall time < 300 s (2 cores).

Case `audit` (issue 28, benchmarks/privacy_audit.py): membership inference (`lepton privacy audit`) on `mlp`
and `cnn-small` trained on digits, and on `mlp` under DP-SGD at ε = 3 (attack AUC ≤ 0.55 asked).

Cases live in CASES (name → function returning its JSON section, its table, and its plot); `--only` picks
some. Every case writes into the one JSON file, keeping the sections of cases not run.

    python benchmarks/privacy.py [--only dp,fedavg,fedprox,client-dp,scale,audit] [--seeds 3]
                                 [--epsilons 1,3,8] [--shadow-models 16]
                                 [--out benchmarks/results/privacy.json]

Writes benchmarks/results/privacy.json and privacy-CASE.png; the tables go to the terminal."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import write_json
from privacy_audit import case_audit, plot_audit, table_audit
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
DELTA = 1e-5
TARGET = {"epsilon": 3.0, "accuracy": 0.90}
console = Console(width=None if sys.stdout.isatty() else 160)


def train(seed: int, dp: dict[str, float] | None) -> dict[str, Any]:
    """Train and register `mlp` on digits as `lepton train` does (with `dp`, its DP defaults); return
    figures."""
    from lepton_ai.train import train_and_register

    # the CLI's defaults
    options: dict[str, Any] = {"epochs": 10, "lr": 3e-3, "batch_size": 64} if dp is None else {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_and_register(
            "mlp", "digits", f"bench-dp-{seed}", seed=seed, dp=dp, device="cpu", progress=False, **options
        )
    privacy = result.history["privacy"] or {}
    return {
        "seed": seed,
        "accuracy": result.metrics["accuracy"],
        "f1_macro": result.metrics["f1_macro"],
        "epsilon_spent": privacy.get("epsilon"),
        "noise_multiplier": privacy.get("noise_multiplier"),
        "steps": privacy.get("steps"),
        "train_seconds": result.history["train_seconds"],
        "wall_seconds": time.perf_counter() - t0,
    }


def case_dp(args: argparse.Namespace) -> dict[str, Any]:
    """Non-private baseline against DP-SGD at each ε, over `args.seeds` seeds."""
    from lepton_ai.privacy.defaults import DP_TRAINING_DEFAULTS
    from lepton_ai.privacy.dp import DEFAULT_MAX_GRAD_NORM, MECHANISM

    epsilons = [float(e) for e in args.epsilons.split(",")]
    configs: list[tuple[str, dict[str, float] | None]] = [("non-private", None)]
    configs += [(f"DP-SGD ε={e:g}", {"epsilon": e, "delta": DELTA}) for e in epsilons]
    rows = []
    for label, dp in configs:
        runs = []
        for seed in range(args.seeds):
            r = train(seed, dp)
            runs.append(r)
            eps = f", ε spent {r['epsilon_spent']:.3f}, σ {r['noise_multiplier']:.3f}" if dp else ""
            console.print(
                f"{label:>16} · seed {seed}: accuracy {r['accuracy']:.4f}{eps}, {r['train_seconds']:.1f} s"
            )
        accs = [r["accuracy"] for r in runs]
        rows.append(
            {
                "label": label,
                "target_epsilon": dp["epsilon"] if dp else None,
                "delta": DELTA if dp else None,
                "accuracy_mean": statistics.mean(accs),
                "accuracy_min": min(accs),
                "accuracy_max": max(accs),
                "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "epsilon_spent_max": max(r["epsilon_spent"] for r in runs) if dp else None,
                "noise_multiplier": runs[0]["noise_multiplier"],
                "steps": runs[0]["steps"],
                "train_seconds_median": statistics.median(r["train_seconds"] for r in runs),
                "runs": runs,
            }
        )
    at_target = [r for r in rows if r["target_epsilon"] == TARGET["epsilon"]]
    verdict = {
        "target": (
            f"mean accuracy >= {TARGET['accuracy']} at epsilon <= {TARGET['epsilon']:g}, delta = {DELTA:g}"
        ),
        "met": bool(at_target)
        and all(
            r["accuracy_mean"] >= TARGET["accuracy"] and r["epsilon_spent_max"] <= TARGET["epsilon"]
            for r in at_target
        ),
    }
    setup = {
        "model": "mlp",
        "data": "digits (sklearn; split 70/10/20 drawn by each seed)",
        "seeds": args.seeds,
        "delta": DELTA,
        "mechanism": MECHANISM,
        "sampling": "Poisson (Opacus DPDataLoader)",
        "dp_defaults": {
            **DP_TRAINING_DEFAULTS,
            "max_grad_norm": DEFAULT_MAX_GRAD_NORM,
            "optimizer": "AdamW",
            "schedule": "cosine",
            "standardisation": "pixels 0..16 → -1..1 (data-independent)",
        },
        "non_private": {
            "epochs": 10,
            "batch_size": 64,
            "lr": 3e-3,
            "standardisation": "per pixel, train split",
        },
    }
    return {"setup": setup, "rows": rows, "verdict": verdict}


def table_dp(section: dict[str, Any]) -> Table:
    t = Table(
        title=f"digits mlp, test accuracy over {section['setup']['seeds']} seeds (δ = {DELTA:g} for DP rows)",
        title_justify="left",
    )
    for col in (
        "configuration",
        "ε spent (max)",
        "noise σ",
        "steps",
        "accuracy mean",
        "min",
        "max",
        "train s (median)",
    ):
        t.add_column(col, justify="right")
    for r in section["rows"]:
        t.add_row(
            r["label"],
            "-" if r["epsilon_spent_max"] is None else f"{r['epsilon_spent_max']:.3f}",
            "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}",
            str(r["steps"] or "-"),
            f"{r['accuracy_mean']:.4f}",
            f"{r['accuracy_min']:.4f}",
            f"{r['accuracy_max']:.4f}",
            f"{r['train_seconds_median']:.1f}",
        )
    return t


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_dp(section: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    dp = [r for r in section["rows"] if r["target_epsilon"] is not None]
    base = next(r for r in section["rows"] if r["target_epsilon"] is None)
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["epsilon_spent_max"] for r in dp]
    ax.errorbar(
        xs,
        [r["accuracy_mean"] for r in dp],
        yerr=[
            [r["accuracy_mean"] - r["accuracy_min"] for r in dp],
            [r["accuracy_max"] - r["accuracy_mean"] for r in dp],
        ],
        marker="o",
        capsize=4,
        label="DP-SGD (mean, min–max over seeds)",
    )
    ax.axhline(
        base["accuracy_mean"],
        color="grey",
        linestyle="--",
        label=f"non-private ({base['accuracy_mean']:.3f})",
    )
    ax.axhline(TARGET["accuracy"], color="red", linestyle=":", label=f"target at ε ≤ {TARGET['epsilon']:g}")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, [f"{x:.2g}" for x in xs])
    ax.set_xlabel(f"ε spent (δ = {DELTA:g})")
    ax.set_ylabel("test accuracy")
    ax.set_title("digits, mlp: accuracy against privacy budget")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- federated learning -------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def federated(seeds: int, **options: Any) -> dict[str, Any]:
    """Run `federated_train` as `lepton fl run` does with `options`, once per seed; return the figures."""
    from lepton_ai.privacy.federated import DEFAULTS, federated_train

    runs = []
    for seed in range(seeds):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        r = federated_train(data="digits", seed=seed, progress=False, name=f"bench-fl-{seed}", **options)
        runs.append(
            {
                "seed": seed,
                "accuracy": r.metrics["accuracy"],
                "loss": r.metrics["loss"],
                "best_round_accuracy": max(row["accuracy"] for row in r.history),
                "accuracy_by_round": [round(row["accuracy"], 4) for row in r.history],
                "epsilon_spent": r.privacy["epsilon"] if r.privacy else None,
                "noise_multiplier": r.privacy["noise_multiplier"] if r.privacy else None,
                "wall_seconds": time.perf_counter() - t0,
                "cpu_seconds": _cpu_seconds() - c0,
            }
        )
        eps = f", ε spent {runs[-1]['epsilon_spent']:.3f}" if r.privacy else ""
        console.print(
            f"  seed {seed}: accuracy {r.metrics['accuracy']:.4f}{eps} · {runs[-1]['wall_seconds']:.1f} s"
        )
    accs = [r["accuracy"] for r in runs]
    return {
        "setup": {**DEFAULTS, **options, "data": "digits", "seeds": seeds},
        "accuracy_mean": statistics.mean(accs),
        "accuracy_min": min(accs),
        "accuracy_max": max(accs),
        "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in runs),
        "runs": runs,
    }


def case_fedavg(args: argparse.Namespace, strategy: str = "fedavg") -> dict[str, Any]:
    """FedAvg, 10 clients, Dirichlet α=0.1, 30 rounds: accuracy ≥ 0.97 on every seed."""
    out = federated(args.seeds, clients=10, rounds=30, partition="dirichlet:0.1", strategy=strategy)
    return {
        **out,
        "verdict": {
            "target": "accuracy >= 0.97 on every seed (10 clients, Dirichlet 0.1, 30 rounds)",
            "met": out["accuracy_min"] >= 0.97,
        },
    }


def case_fedprox(args: argparse.Namespace) -> dict[str, Any]:
    """FedProx (μ = 0.01), the same setup and target as FedAvg."""
    return case_fedavg(args, strategy="fedprox:0.01")


def case_client_dp(args: argparse.Namespace) -> dict[str, Any]:
    """Client-level DP-FedAvg, ε = 8, δ = 1e-5: 100 clients (IID), all of them in each of 20 rounds, 5 local
    epochs, constant lr, updates clipped to norm 1 (mlp: the default under DP). Accuracy reported, no bar."""
    out = federated(
        args.seeds,
        clients=100,
        rounds=20,
        partition="iid",
        fraction=1.0,
        local_epochs=5,
        dp={"epsilon": 8.0, "delta": DELTA, "clip": 1.0},
    )
    eps = max(r["epsilon_spent"] for r in out["runs"])
    return {
        **out,
        "epsilon_spent_max": eps,
        "verdict": {"target": "epsilon <= 8 (accuracy reported, no bar)", "met": eps <= 8.0},
    }


def case_scale(args: argparse.Namespace) -> dict[str, Any]:
    """1,000 clients (IID: one or two examples each), 10 % per round, 5 rounds: wall time under 300 s."""
    import torch

    out = federated(1, clients=1000, rounds=5, partition="iid", fraction=0.1)
    wall = out["runs"][0]["wall_seconds"]
    return {
        **out,
        "threads": torch.get_num_threads(),
        "verdict": {"target": "1,000 clients, 10% per round, 5 rounds in < 300 s", "met": wall < 300.0},
    }


def table_federated(section: dict[str, Any]) -> Table:
    setup = section["setup"]
    t = Table(
        title=f"{setup['strategy']}, {setup['clients']} clients, {setup['partition']}, "
        f"{setup['rounds']} rounds" + (", client-level DP" if setup.get("dp") else ""),
        title_justify="left",
    )
    for col in ("seed", "final accuracy", "best round", "loss", "ε spent", "wall s", "CPU s"):
        t.add_column(col, justify="right")
    for r in section["runs"]:
        t.add_row(
            str(r["seed"]),
            f"{r['accuracy']:.4f}",
            f"{r['best_round_accuracy']:.4f}",
            f"{r['loss']:.4f}",
            "-" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3f}",
            f"{r['wall_seconds']:.1f}",
            f"{r['cpu_seconds']:.1f}",
        )
    return t


def plot_federated(section: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in section["runs"]:
        curve = r["accuracy_by_round"]
        ax.plot(
            range(1, len(curve) + 1),
            curve,
            marker="." if len(curve) < 10 else None,
            label=f"seed {r['seed']}",
        )
    if "0.97" in section["verdict"]["target"]:
        ax.axhline(0.97, color="red", linestyle=":", label="target 0.97")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy of the global model")
    ax.set_title(table_federated(section).title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


CASES: dict[
    str,
    tuple[
        Callable[[argparse.Namespace], dict[str, Any]],
        Callable[[dict[str, Any]], Table],
        Callable[[dict[str, Any], Path], None],
    ],
] = {
    "dp": (case_dp, table_dp, plot_dp),
    "fedavg": (case_fedavg, table_federated, plot_federated),
    "fedprox": (case_fedprox, table_federated, plot_federated),
    "client-dp": (case_client_dp, table_federated, plot_federated),
    "scale": (case_scale, table_federated, plot_federated),
    "audit": (case_audit, table_audit, plot_audit),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(CASES), help=f"Comma-separated cases: {', '.join(CASES)}.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epsilons", default="1,3,8", help="Target ε of the DP-SGD rows.")
    parser.add_argument("--shadow-models", type=int, default=16, help="LiRA's shadow models (case audit).")
    parser.add_argument("--out", default=str(RESULTS / "privacy.json"))
    args = parser.parse_args()
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    # a registry of its own
    os.environ["LEPTON_HOME"] = tempfile.mkdtemp(prefix="lepton-privacy-bench-")
    import torch

    from lepton_ai.machine import describe, machine_info

    info = machine_info()
    console.print(
        f"[bold]machine:[/] {describe(info)} · torch {torch.__version__} · {torch.get_num_threads()} threads"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.update(
        {
            "machine": info,
            "machine_line": describe(info),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
    )
    doc.setdefault("cases", {})
    for name in chosen:
        run, table, plot = CASES[name]
        t0 = time.perf_counter()
        section = run(args)
        section["seconds"] = time.perf_counter() - t0
        section["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        # the file's command and machine are the last run's: each section keeps its own
        section["command"], section["machine_line"] = doc["command"], doc["machine_line"]
        doc["cases"][name] = section
        console.print(table(section))
        if "verdict" in section:
            met = "met" if section["verdict"]["met"] else "NOT met"
            console.print(f"{name}: {section['verdict']['target']} — {met}")
        png = out.with_name(f"{out.stem}-{name}.png")
        plot(section, png)
        console.print(f"wrote {png}")
        # after each case: a later failure keeps what was measured
        write_json(out, doc)
    summary = Table(title="privacy benchmark: every case in " + out.name, title_justify="left")
    for col in ("case", "measured", "target", "verdict"):
        summary.add_column(col)
    for name, section in doc["cases"].items():
        verdict = section.get("verdict", {})
        summary.add_row(
            name,
            section.get("measured_at", "?"),
            verdict.get("target", "-"),
            "[green]met[/]" if verdict.get("met") else "[red]NOT met[/]",
        )
    console.print(summary)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
