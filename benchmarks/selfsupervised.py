"""Self-supervised pretraining benchmark (issue 26): a backbone pretrained without labels, then a linear head
on few labels, against what a practitioner would otherwise do with the same labels, in one run.

- Digits: cnn-small pretrained by VICReg (and SimCLR, at 5 %) on every training image, labels unused; a linear
  head (`lepton train --init … --head-only`'s path) on 1, 5, 10 and 100 % of the training labels (seeded,
  stratified: `--label-fraction`), against cnn-small trained from scratch on exactly those labels and a
  logistic regression on the pixels. Test accuracy, mean and spread over S seeds (a seed draws the splits, the
  labels kept and the weights); the label-efficiency curve as a PNG. Asked: at 5 %, SSL + head ≥ supervised +
  3 points; pretraining < 3 minutes on 2 cores.
- Breast cancer (a table): mlp pretrained with SCARF views (NT-Xent) on the training rows; a head on 10 % of
  the labels against mlp from scratch and a logistic regression on the same rows: reported.

    python benchmarks/selfsupervised.py [--seeds 3] [--epochs 100]

(Not benchmarks/ssl.py, as the issue names it: run as a script, that file would shadow the standard library's
`ssl`, which asyncio imports.)

Writes benchmarks/results/ssl.json and ssl.png; the tables go to the terminal."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from common import write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
FRACTIONS = (0.01, 0.05, 0.10, 1.0)
console = Console(width=None if sys.stdout.isatty() else 160)


def quiet_model(num_classes: int, input_size: tuple[int, ...], source: str) -> Any:
    """Return a LeptonModel from `source` (an architecture or a saved backbone's folder), quietly."""
    from lepton_ai.models import LeptonModel

    model = LeptonModel(num_classes=num_classes, input_size=input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.load_pretrained_model(source)


def pretrained(data: str, arch: str, method: str, seed: int, epochs: int, folder: Path) -> tuple[Path, float]:
    """Pretrain `arch` on `data`'s training split by `method` (labels unused); return where the backbone is
    saved and the seconds it took."""
    import torch

    from lepton_ai.data import load
    from lepton_ai.ssl import pretrain

    train, val = load(data, "train", seed=seed), load(data, "val", seed=seed)
    torch.manual_seed(seed)
    model = quiet_model(0, train.input_size, arch)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain(model, train, method, val_data=val, epochs=epochs, seed=seed, progress=False, device="cpu")
    seconds = time.perf_counter() - start
    return model.save_dir(folder / f"{data}-{method}-{seed}"), seconds


def accuracies(data: str, arch: str, backbone: Path | None, fraction: float, seed: int) -> dict[str, float]:
    """Return the test accuracy of a head on the backbone, of `arch` from scratch and of a logistic regression
    on the inputs, each trained on the same `fraction` of the training labels."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lepton_ai.data import load

    train, val, test = (load(data, s, seed=seed) for s in ("train", "val", "test"))
    few = train.labelled_share(fraction, seed)
    out = {}
    if backbone is not None:
        head = quiet_model(train.num_classes, train.input_size, str(backbone))
        head.fit(few, val, head_only=True, seed=seed, progress=False, device="cpu")
        out["ssl_head"] = head.evaluate(test)["accuracy"]
    else:
        torch.manual_seed(seed)
        scratch = quiet_model(train.num_classes, train.input_size, arch)
        # enough steps on a few labels for a fair baseline: 100 epochs below a tenth, as for all of them
        epochs = 100 if fraction <= 0.1 else 30
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scratch.fit(few, val, epochs=epochs, seed=seed, progress=False, device="cpu")
        out["supervised"] = scratch.evaluate(test)["accuracy"]
        flat = (few.features.reshape(len(few), -1).numpy(), test.features.reshape(len(test), -1).numpy())
        logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        logistic.fit(flat[0], few.labels.numpy())
        out["logistic"] = float(logistic.score(flat[1], test.labels.numpy()))
    return out


def digits_case(seeds: int, epochs: int, work: Path) -> dict[str, Any]:
    """The label-efficiency curve on digits, and SimCLR's head at 5 %."""
    runs: list[dict[str, Any]] = []
    for seed in range(seeds):
        vicreg, vicreg_s = pretrained("digits", "cnn-small", "vicreg", seed, epochs, work)
        simclr, simclr_s = pretrained("digits", "cnn-small", "simclr", seed, epochs, work)
        row: dict[str, Any] = {"seed": seed, "pretrain_seconds": {"vicreg": vicreg_s, "simclr": simclr_s}}
        for fraction in FRACTIONS:
            row[str(fraction)] = {
                **accuracies("digits", "cnn-small", None, fraction, seed),
                **accuracies("digits", "cnn-small", vicreg, fraction, seed),
            }
        row["0.05"]["simclr_head"] = accuracies("digits", "cnn-small", simclr, 0.05, seed)["ssl_head"]
        runs.append(row)
        console.print(f"  digits seed {seed}: " + " · ".join(f"{f}: {row[str(f)]}" for f in FRACTIONS))
    return {"runs": runs, "summary": _summary(runs, [str(f) for f in FRACTIONS])}


def table_case(seeds: int, epochs: int, work: Path) -> dict[str, Any]:
    """SCARF on breast cancer, a head on 10 % of the labels."""
    runs = []
    for seed in range(seeds):
        backbone, seconds = pretrained("breast_cancer", "mlp", "simclr", seed, epochs, work)
        row = {
            "seed": seed,
            "pretrain_seconds": seconds,
            "0.1": {
                **accuracies("breast_cancer", "mlp", None, 0.1, seed),
                **accuracies("breast_cancer", "mlp", backbone, 0.1, seed),
            },
        }
        runs.append(row)
        console.print(f"  breast cancer seed {seed}: {row['0.1']}")
    return {"runs": runs, "summary": _summary(runs, ["0.1"])}


def _summary(runs: list[dict[str, Any]], fractions: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Return each fraction's accuracies as mean, min and max over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for f in fractions:
        out[f] = {}
        for method in runs[0][f]:
            values = [r[f][method] for r in runs]
            out[f][method] = {"mean": statistics.mean(values), "min": min(values), "max": max(values)}
    return out


def plot(digits: dict[str, Any], path: Path) -> Path:
    """Save the label-efficiency curve: test accuracy by share of labels, mean and range over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    shares = [100 * f for f in FRACTIONS]
    names = {
        "ssl_head": "VICReg + linear head",
        "supervised": "cnn-small from scratch",
        "logistic": "logistic regression",
    }
    for method, label in names.items():
        rows = [digits["summary"][str(f)][method] for f in FRACTIONS]
        ax.plot(shares, [r["mean"] for r in rows], marker="o", label=label)
        ax.fill_between(shares, [r["min"] for r in rows], [r["max"] for r in rows], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("training labels kept (%)")
    ax.set_ylabel("test accuracy")
    ax.set_title("digits: accuracy against labels (3 seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(result: dict[str, Any]) -> None:
    """Print the figures against what issue 26 asks."""
    t = Table(title=f"self-supervised benchmark · {result['machine']}", title_justify="left")
    for column in (
        "labels",
        "VICReg + head",
        "SimCLR + head",
        "cnn-small from scratch",
        "logistic regression",
    ):
        t.add_column(column)
    summary = result["digits"]["summary"]
    for f in FRACTIONS:
        row = summary[str(f)]
        cells = [_cell(row, m) for m in ("ssl_head", "simclr_head", "supervised", "logistic")]
        t.add_row(f"{100 * f:g} %", *cells)
    console.print(t)
    gain = summary["0.05"]["ssl_head"]["mean"] - summary["0.05"]["supervised"]["mean"]
    console.print(f"at 5 %: SSL + head − supervised = {100 * gain:+.1f} points (asked ≥ +3)")
    console.print(f"VICReg pretraining on digits: {result['pretrain_seconds']} s (asked < 180)")
    console.print(f"breast cancer, 10 % of labels: {result['table']['summary']['0.1']}")


def _cell(row: dict[str, dict[str, float]], method: str) -> str:
    if method not in row:
        return ""
    return f"{row[method]['mean']:.4f} ({row[method]['min']:.4f}–{row[method]['max']:.4f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "ssl.json")
    args = parser.parse_args()
    import torch

    from lepton_ai.machine import describe, machine_info

    torch.set_num_threads(2)
    info = machine_info()
    result: dict[str, Any] = {"machine": describe(info), "machine_info": info, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="lepton-bench-ssl-") as tmp:
        result["digits"] = digits_case(args.seeds, args.epochs, Path(tmp))
        result["table"] = table_case(args.seeds, args.epochs, Path(tmp))
    seconds = [r["pretrain_seconds"]["vicreg"] for r in result["digits"]["runs"]]
    result["pretrain_seconds"] = {"median": statistics.median(seconds), "max": max(seconds)}
    result["png"] = str(plot(result["digits"], args.out.with_suffix(".png")))
    report(result)
    write_json(args.out, result)
    console.print(f"wrote {args.out} and {result['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
