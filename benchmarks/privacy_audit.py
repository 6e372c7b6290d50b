"""The `audit` case of benchmarks/privacy.py (issue 28): what membership inference learns from models trained
on digits as `lepton train` trains them, measured by `lepton privacy audit`.

Targets (seed 0, so the 70/10/20 split of `lepton train`): `mlp` and `cnn-small` with their defaults (10
epochs, batch 64, lr 3e-3), and `mlp` with DP-SGD at ε = 3, δ = 1e-5 (the DP defaults: 40 epochs, expected
batch 128, lr 1e-2). Each is audited on its 360 test digits against 360 of its training digits, by the loss
threshold and by LiRA with `--shadow-models` shadow models trained by its own recipe (DP-SGD for the private
one) on halves of train + test. Asked: the DP-SGD model's attack AUC ≤ 0.55 (both attacks); the others are
reported.

    python benchmarks/privacy.py --only audit [--shadow-models 16]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

from rich.table import Table

DELTA = 1e-5
TARGET_AUC = 0.55
# label, architecture, DP-SGD target (None: not private)
TARGETS: tuple[tuple[str, str, dict[str, float] | None], ...] = (
    ("mlp", "mlp", None),
    ("cnn-small", "cnn-small", None),
    ("mlp, DP-SGD ε = 3", "mlp", {"epsilon": 3.0, "delta": DELTA}),
)


def audit_one(label: str, arch: str, dp: dict[str, float] | None, shadow_models: int) -> dict[str, Any]:
    """Train `arch` on digits as `lepton train` does (with `dp`, DP-SGD), register it, audit it; return the
    figures."""
    from lepton_ai.privacy.audit import audit
    from lepton_ai.train import train_and_register

    name = f"audit-{arch}" + ("-dp" if dp else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = train_and_register(arch, "digits", name, seed=0, dp=dp, device="cpu", progress=False)
    t0 = time.perf_counter()
    result = audit(trained.ref, "digits", shadow_models=shadow_models, progress=True)
    privacy = trained.history.get("privacy") or {}
    return {
        "label": label,
        "model": arch,
        "target_epsilon": dp["epsilon"] if dp else None,
        "epsilon_spent": privacy.get("epsilon"),
        "test_accuracy": trained.metrics["accuracy"],
        "train_seconds": trained.history["train_seconds"],
        "audit_seconds": time.perf_counter() - t0,
        "audit": result.to_dict(),
    }


def case_audit(args: argparse.Namespace) -> dict[str, Any]:
    """Each target trained, registered and audited; the DP-SGD model's attack AUC against 0.55."""
    rows = [audit_one(label, arch, dp, args.shadow_models) for label, arch, dp in TARGETS]
    private = [r for r in rows if r["target_epsilon"] is not None]
    worst = max(max(r["audit"]["lira"]["auc"], r["audit"]["loss"]["auc"]) for r in private)
    return {
        "setup": {
            "data": "digits (sklearn), lepton train's split at seed 0: 1,257 train / 180 val / 360 test",
            "audited": "the 360 test digits against 360 training digits drawn at random",
            "shadow_models": args.shadow_models,
            "shadow_training": "its recorded recipe, on balanced random halves of train + test (808 each)",
            "intervals": "95 %, 200 bootstrap resamples of the examples (members and non-members apart)",
            "delta": DELTA,
        },
        "rows": rows,
        "verdict": {
            "target": f"DP-SGD at epsilon = 3: attack AUC (LiRA and loss threshold) <= {TARGET_AUC}",
            "met": worst <= TARGET_AUC,
            "worst_auc": worst,
        },
    }


def _with_interval(value: float, interval: list[float], percent: bool = False) -> str:
    if percent:
        return f"{value:.1%} [{interval[0]:.1%}, {interval[1]:.1%}]"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def table_audit(section: dict[str, Any]) -> Table:
    shadows = section["setup"]["shadow_models"]
    t = Table(
        title=f"membership inference on digits ({shadows} shadow models, 95 % intervals)",
        title_justify="left",
    )
    columns = ("target", "ε spent", "test acc", "member / non-member acc", "loss AUC", "loss TPR@1%FPR")
    for col in (*columns, "LiRA AUC", "LiRA TPR@1%FPR", "audit s"):
        t.add_column(col, justify="right")
    for r in section["rows"]:
        a = r["audit"]
        t.add_row(
            r["label"],
            "-" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3f}",
            f"{r['test_accuracy']:.4f}",
            f"{a['member_accuracy']:.3f} / {a['non_member_accuracy']:.3f}",
            _with_interval(a["loss"]["auc"], a["loss"]["auc_ci"]),
            _with_interval(a["loss"]["tpr"], a["loss"]["tpr_ci"], percent=True),
            _with_interval(a["lira"]["auc"], a["lira"]["auc_ci"]),
            _with_interval(a["lira"]["tpr"], a["lira"]["tpr_ci"], percent=True),
            f"{r['audit_seconds']:.0f}",
        )
    return t


def plot_audit(section: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = section["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for shift, (attack, colour) in zip(
        (-0.15, 0.15), (("loss", "tab:grey"), ("lira", "tab:red")), strict=True
    ):
        ys = [i + shift for i in range(len(rows))]
        aucs = [r["audit"][attack]["auc"] for r in rows]
        low = [a - r["audit"][attack]["auc_ci"][0] for a, r in zip(aucs, rows, strict=True)]
        high = [r["audit"][attack]["auc_ci"][1] - a for a, r in zip(aucs, rows, strict=True)]
        label = "LiRA" if attack == "lira" else "loss threshold"
        ax.errorbar(aucs, ys, xerr=[low, high], fmt="o", color=colour, capsize=3, label=label)
    ax.axvline(0.5, color="black", linewidth=0.8, label="chance")
    ax.axvline(TARGET_AUC, color="red", linestyle=":", label=f"asked of DP-SGD (≤ {TARGET_AUC})")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.set_xlabel("attack ROC AUC (95 % bootstrap interval)")
    ax.set_title("membership inference on digits", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
