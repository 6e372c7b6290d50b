"""Data benchmark (issue 25): `lepton data add` against what a practitioner would otherwise run, in one run.

- Ingest: N small PNGs (scikit-learn's digits, each made unique by one pixel, in class folders) added as
  a dataset, against `sha256sum` over the same files (the I/O-and-hash limit), interleaved repeats, each add
  into a fresh registry, each timed from a cold page cache where the kernel lets us drop it (as root); then
  R files changed and the folder added again (only what changed is read and stored).
  Figures: sha256sum's time / the add's (≥ 0.5 asked), the second add's time / the first's (< 0.2 asked),
  what the second add stored.
- Table: a CSV of M rows (10 numeric columns and a label) added and validated in a child process: its wall
  time and peak memory (ru_maxrss) (< 60 s and < 1 GB asked).
- Label issues: digits written as an image folder with 5 % of the labels flipped (S seeded draws); the issues
  found against the flipped files (recall and precision ≥ 0.8 asked, median and spread over draws); then, on
  the first draw, cnn-small trained on the clean, the noisy and the cleaned train split (the same records),
  each over S seeds, tested on the true labels of the same test split: the cleaned version must win back at
  least half of what the flips cost.

    python benchmarks/data.py [--files 50000] [--changed 100] [--rows 1000000] [--repeats 3] [--seeds 3]

Writes benchmarks/results/data.json; the tables go to the terminal."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from common import write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)


def write_pngs(root: Path, count: int) -> list[Path]:
    """Write `count` distinct 8×8 PNGs of digits in root/<digit>/; return their paths."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)
    paths = []
    for n in range(count):
        i, variant = n % len(images), n // len(images)
        pixels = images[i].copy()
        # one pixel per variant: every file is different bytes
        pixels.flat[variant % 64] = (int(pixels.flat[variant % 64]) + 1 + variant // 64) % 256
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{n:06d}.png"
        Image.fromarray(pixels, "L").save(path)
        paths.append(path)
    return paths


def drop_caches() -> bool:
    """Write back and drop the page cache (as root, where the kernel lets us), so what follows reads the disk;
    return whether it could."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def sha256sum_seconds(root: Path) -> float:
    """Return the wall time of `find ROOT -type f -print0 | xargs -0 sha256sum` (output discarded), from a
    cold cache where it can be dropped."""
    drop_caches()
    start = time.perf_counter()
    find = subprocess.Popen(["find", str(root), "-type", "f", "-print0"], stdout=subprocess.PIPE)
    subprocess.run(["xargs", "-0", "sha256sum"], stdin=find.stdout, stdout=subprocess.DEVNULL, check=True)
    find.wait()
    return time.perf_counter() - start


def add_seconds(home: Path, name: str, source: Path) -> tuple[float, Any]:
    """Return the wall time of adding `source` as dataset `name` in the registry at `home` (from a cold
    cache where it can be dropped), and the version."""
    from lepton_ai.data.ingest import add
    from lepton_ai.store import db

    os.environ["LEPTON_HOME"] = str(home)
    drop_caches()
    start = time.perf_counter()
    info = add(name, str(source))
    seconds = time.perf_counter() - start
    db.dispose_all()
    return seconds, info


def ingest_case(files: int, changed: int, repeats: int) -> dict[str, Any]:
    """Time sha256sum and two adds (all files, then `changed` of them changed), interleaved, `repeats`
    times."""
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="lepton-bench-data-"))
    try:
        root = work / "pngs"
        console.print(f"writing {files:,} PNGs …")
        paths = write_pngs(root, files)
        rounds = []
        for r in range(repeats):
            sha = sha256sum_seconds(root)
            home = work / f"home{r}"
            first, info1 = add_seconds(home, "pngs", root)
            # changed in place: new content, each file its own, at the same paths
            for j, p in enumerate(paths[r * changed : (r + 1) * changed]):
                pixels = np.full((8, 8), 255 - r, np.uint8)
                pixels.flat[j % 64], pixels.flat[63 - j // 64] = j % 251, j // 64
                Image.fromarray(pixels, "L").save(p)
            second, info2 = add_seconds(home, "pngs", root)
            rounds.append(
                {
                    "sha256sum_s": sha,
                    "first_add_s": first,
                    "second_add_s": second,
                    "records": info1.records,
                    "second_new_records": info2.stats["new_records"],
                    "second_stored_bytes": info2.stored_bytes,
                    "first_stored_bytes": info1.stored_bytes,
                }
            )
            console.print(
                f"  round {r + 1}: sha256sum {sha:.2f} s · add {first:.2f} s · second add {second:.2f} s"
            )
            shutil.rmtree(home)
        cold = drop_caches()
        return {"files": files, "changed": changed, "cold_cache": cold, "rounds": rounds, **_ratios(rounds)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ratios(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    throughput = [r["sha256sum_s"] / r["first_add_s"] for r in rounds]
    second = [r["second_add_s"] / r["first_add_s"] for r in rounds]
    return {"throughput_vs_sha256sum": _median(throughput), "second_add_vs_first": _median(second)}


def _median(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


_TABLE_CHILD = """
import sys, time
from lepton_ai.data.ingest import add
start = time.perf_counter()
info = add("table", sys.argv[1])
print(time.perf_counter() - start, info.records, info.stats["quarantined"])
"""


def table_case(rows: int) -> dict[str, Any]:
    """Write a CSV of `rows` rows (10 numeric columns, a label) and add it in a child process: wall time, peak
    memory."""
    import pandas as pd

    work = Path(tempfile.mkdtemp(prefix="lepton-bench-table-"))
    try:
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(rng.normal(size=(rows, 10)).round(6), columns=[f"x{i}" for i in range(10)])
        frame["label"] = rng.integers(0, 5, rows)
        csv = work / "table.csv"
        console.print(f"writing a CSV of {rows:,} rows …")
        frame.to_csv(csv, index=False)
        env = {**os.environ, "LEPTON_HOME": str(work / "home")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(
            [sys.executable, "-c", _TABLE_CHILD, str(csv)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        seconds, records, quarantined = done.stdout.split()
        return {
            "rows": rows,
            "csv_bytes": csv.stat().st_size,
            "seconds": float(seconds),
            "records": int(records),
            "quarantined": int(quarantined),
            # the largest child so far: this one, unless an earlier child was larger
            "peak_rss_mb": max(peak_kb, before) / 1024,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def label_case(seeds: int, share: float = 0.05) -> dict[str, Any]:
    """Flip `share` of digits' labels (one draw per seed), find them with cleanlab, and train on the clean,
    noisy and cleaned data of the first draw."""
    from lepton_ai.data.clean import drop_label_issues

    work = Path(tempfile.mkdtemp(prefix="lepton-bench-labels-"))
    os.environ["LEPTON_HOME"] = str(work / "home")
    try:
        draws = [_flipped_draw(work, draw, share) for draw in range(seeds)]
        for d in draws:
            console.print(f"  draw {d.seed}: recall {d.recall:.3f} · precision {d.precision:.3f}")
        first = draws[0]
        cleaned = drop_label_issues(first.info, first.issues)
        accuracy = _train_three(first.info.ref, cleaned.ref, first.truth, seeds)
        return {
            "flipped": len(first.flipped),
            "issues": len(first.issues),
            "recall": _median([d.recall for d in draws]),
            "precision": _median([d.precision for d in draws]),
            "draws": [{"seed": d.seed, "recall": d.recall, "precision": d.precision} for d in draws],
            "accuracy": accuracy,
            "recovered": _recovered(accuracy),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


class FlippedDraw(NamedTuple):
    """One seeded draw of flipped labels, and what label_issues found in it."""

    seed: int
    info: Any
    issues: list[Any]
    flipped: set[str]
    truth: dict[str, str]
    recall: float
    precision: float


def _flipped_draw(work: Path, seed: int, share: float) -> FlippedDraw:
    """Write digits as an image folder with `share` of its files moved to another class (seeded), add it as
    dataset noisy<seed>, and score label_issues against the files moved."""
    from lepton_ai.data.clean import label_issues
    from lepton_ai.data.ingest import add

    root = work / f"digits{seed}"
    paths = write_pngs(root, 1797)
    # file names are unique: a file's true class by its name, wherever the flip moved it
    truth = {p.name: p.parent.name for p in paths}
    rng = np.random.default_rng(seed)
    flipped = set()
    for p in rng.choice(paths, int(share * len(paths)), replace=False):
        other = str((int(p.parent.name) + int(rng.integers(1, 10))) % 10)
        p.rename(root / other / p.name)
        flipped.add(f"{other}/{p.name}")
    add(f"noisy{seed}", str(root))
    info, issues = label_issues(f"noisy{seed}")
    hits = len({i.record for i in issues} & flipped)
    return FlippedDraw(seed, info, issues, flipped, truth, hits / len(flipped), hits / max(1, len(issues)))


def _train_three(noisy: str, cleaned: str, truth: dict[str, str], seeds: int) -> dict[str, dict[str, float]]:
    """Return the test accuracy (true labels) of cnn-small trained on the clean, noisy and cleaned train
    splits, the median and spread over `seeds` seeds."""
    import torch

    from lepton_ai.data import load
    from lepton_ai.data.manifest import KEY, PATH, read_manifest
    from lepton_ai.store.datasets import Datasets

    datasets = Datasets()
    paths = read_manifest(datasets.manifest(datasets.get(noisy)), columns=[KEY, PATH])
    true_label = {k: truth[p.rsplit("/", 1)[1]] for k, p in zip(paths[KEY], paths[PATH])}
    noisy_train, test = load(noisy, "train"), load(noisy, "test")
    clean_train = _relabelled(noisy_train, true_label)
    test = _relabelled(test, true_label)
    cleaned_train = load(cleaned, "train")
    runs: dict[str, list[float]] = {"clean": [], "noisy": [], "cleaned": []}
    for seed in range(seeds):
        for name, train in (("clean", clean_train), ("noisy", noisy_train), ("cleaned", cleaned_train)):
            torch.manual_seed(seed)
            runs[name].append(_fit_and_test(train, test, seed))
        console.print(f"  seed {seed}: " + " · ".join(f"{k} {v[-1]:.4f}" for k, v in runs.items()))
    return {name: _median(values) for name, values in runs.items()}


def _relabelled(data: Any, true_label: dict[str, str]) -> Any:
    import torch

    labels = torch.tensor([data.classes.index(true_label[k]) for k in data.meta["keys"]])
    return type(data)(data.kind, labels, data.classes, features=data.features, name=data.name, meta=data.meta)


def _fit_and_test(train: Any, test: Any, seed: int) -> float:
    import warnings

    from lepton_ai import LeptonModel

    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_pretrained_model("cnn-small")
        model.fit(train, epochs=15, lr=3e-3, progress=False, seed=seed)
    return float((model.predict(test.features) == test.labels).float().mean())


def _recovered(accuracy: dict[str, dict[str, float]]) -> float | None:
    """Return the share of the accuracy the flips cost that the cleaned data won back (None if they cost
    none)."""
    clean, noisy, cleaned = (accuracy[k]["median"] for k in ("clean", "noisy", "cleaned"))
    return None if clean <= noisy else (cleaned - noisy) / (clean - noisy)


def report(result: dict[str, Any]) -> None:
    """Print the figures against what issue 25 asks."""
    ingest, table, labels = result["ingest"], result["table"], result["labels"]
    checks = [
        ("ingest throughput / sha256sum's", ingest["throughput_vs_sha256sum"]["median"], ">= 0.5"),
        ("second add / first add (time)", ingest["second_add_vs_first"]["median"], "< 0.2"),
        (f"CSV of {table['rows']:,} rows: seconds", table["seconds"], "< 60"),
        ("CSV: peak memory MB", table["peak_rss_mb"], "< 1024"),
        ("label issues: recall (median of draws)", labels["recall"]["median"], ">= 0.8"),
        ("label issues: precision (median of draws)", labels["precision"]["median"], ">= 0.8"),
        ("cleaned: share of the accuracy lost won back", labels["recovered"], ">= 0.5"),
    ]
    t = Table(title=f"data benchmark · {result['machine']}", title_justify="left")
    for column in ("figure", "value", "asked", "spread"):
        t.add_column(column)
    spreads = {
        0: ingest["throughput_vs_sha256sum"],
        1: ingest["second_add_vs_first"],
        4: labels["recall"],
        5: labels["precision"],
    }
    for i, (name, value, asked) in enumerate(checks):
        spread = spreads.get(i)
        shown = "n/a" if value is None else f"{value:.3f}"
        t.add_row(name, shown, asked, f"{spread['min']:.3f}–{spread['max']:.3f}" if spread else "")
    console.print(t)
    console.print(f"accuracy (median over seeds): {labels['accuracy']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "data.json")
    args = parser.parse_args()
    from lepton_ai.machine import describe, machine_info

    info = machine_info()
    result: dict[str, Any] = {"machine": describe(info), "machine_info": info, "args": vars(args)}
    result["ingest"] = ingest_case(args.files, args.changed, args.repeats)
    result["table"] = table_case(args.rows)
    result["labels"] = label_case(args.seeds)
    report(result)
    write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
