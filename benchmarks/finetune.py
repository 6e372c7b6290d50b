"""Fine-tuning a pretrained transformer on labelled text, against what a practitioner would do instead.

The data: the first paragraph of the docstrings of Python's standard library (the interpreter that runs
this), one sentence or two each, labelled by what the module is for — network, files or text — in three
imbalanced classes; split as `lepton train` splits a JSONL file (seeded, stratified). Compared in one run,
on the same splits, seed by seed:

- baseline: frozen all-MiniLM-L6-v2 sentence embeddings and scikit-learn's logistic regression;
- `lepton train --model minilm --head-only`: the head alone, on the frozen encoder's features;
- `lepton train --model minilm` with its defaults (full fine-tuning, the transformer recipe);
- `--lora r=8`: a LoRA adapter, registered alone (its size against the full model's);
- speed only, one epoch each, interleaved with the defaults: the same recipe in random batches (no length
  grouping), and the defaults before the recipe (lr 3e-3, batch 64, random batches: the issue's 17/s).

    python benchmarks/finetune.py [--seeds 0,1,2] [--out benchmarks/results/finetune.json]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lepton_ai.machine import describe, machine_info

RESULTS = Path(__file__).parent / "results"
GROUPS = {
    "network": "socket ssl http.client http.server http.cookies http.cookiejar urllib.request urllib.parse "
    "urllib.robotparser smtplib ftplib poplib imaplib ipaddress xmlrpc.client xmlrpc.server socketserver "
    "asyncio.streams email.utils email.message selectors select wsgiref.simple_server wsgiref.util mailbox",
    "files": "os os.path pathlib shutil glob fnmatch tempfile io zipfile tarfile gzip bz2 lzma filecmp stat "
    "fileinput shelve dbm sqlite3 mmap zipimport linecache",
    "text": "re string textwrap difflib unicodedata html html.parser json csv codecs locale gettext calendar "
    "pprint reprlib stringprep base64 binascii quopri shlex tokenize xml.dom.minidom xml.etree.ElementTree",
}


def docstrings() -> list[dict[str, str]]:
    """Return {"text", "label"} rows: each public object's docstring's first paragraph, once."""
    rows, seen = [], set()
    for label, names in GROUPS.items():
        for name in names.split():
            module = importlib.import_module(name)
            for obj in [module, *(getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_"))]:
                if inspect.ismodule(obj) and obj is not module:
                    continue
                members = [obj]
                if inspect.isclass(obj):
                    members += [getattr(obj, m, None) for m in sorted(vars(obj)) if not m.startswith("_")]
                for m in members:
                    doc = inspect.getdoc(m) if m is not None else None
                    first = " ".join((doc or "").strip().split("\n\n")[0].split())
                    if 25 <= len(first) <= 300 and first not in seen:
                        seen.add(first)
                        rows.append({"text": first, "label": label})
    return rows


def baseline(train: Any, test: Any) -> dict[str, float]:
    """Frozen MiniLM embeddings + logistic regression: a practitioner's ten lines."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from lepton_ai import LeptonModel

    t0 = time.perf_counter()
    encoder = LeptonModel(num_classes=0).load_pretrained_model("minilm")
    x_train, x_test = encoder.embed(train.texts).numpy(), encoder.embed(test.texts).numpy()
    pred = LogisticRegression(max_iter=2000).fit(x_train, train.labels.numpy()).predict(x_test)
    truth = test.labels.numpy()
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "f1_macro": float(f1_score(truth, pred, average="macro")),
        "seconds": time.perf_counter() - t0,
    }


def lepton_train(path: Path, seed: int, **options: Any) -> dict[str, Any]:
    """Train and register MiniLM on `path` as `lepton train` does; return its test figures, time and size."""
    from lepton_ai.store import Registry
    from lepton_ai.train import train_and_register

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as notices:
        warnings.simplefilter("always")
        result = train_and_register(
            "minilm", str(path), f"finetune-{seed}", seed=seed, progress=False, **options
        )
    history = result.history
    assert result.ref is not None
    return {
        "accuracy": result.metrics["accuracy"],
        "f1_macro": result.metrics["f1_macro"],
        "seconds": time.perf_counter() - t0,
        "train_seconds": history["train_seconds"] + history.get("features_seconds", 0.0),
        "examples_per_s": statistics.median(row["samples_per_s"] for row in history["epochs"]),
        "best_epoch": history["best_epoch"],
        "size_bytes": Registry().get(result.ref).size_bytes,
        "notices": [str(n.message) for n in notices if "learned nothing" in str(n.message)],
    }


METHODS = {
    "head-only": {"head_only": True},
    "defaults": {},
    "random batches (speed)": {"epochs": 1, "group_by_length": False},
    "old defaults (speed)": {
        "epochs": 1,
        "lr": 3e-3,
        "batch_size": 64,
        "schedule": "cosine",
        "group_by_length": False,
    },
    "lora r=8": {"lora": "r=8"},
}


def one_seed(path: Path, seed: int) -> dict[str, Any]:
    """Return every method's figures on the splits of `seed`."""
    from lepton_ai.data import load

    train, test = load(str(path), "train", seed=seed), load(str(path), "test", seed=seed)
    run: dict[str, Any] = {"seed": seed, "baseline": baseline(train, test)}
    for method, options in METHODS.items():
        run[method] = lepton_train(path, seed, **options)
    defaults = run["defaults"]
    run["ratios"] = {
        "f1_vs_baseline": defaults["f1_macro"] - run["baseline"]["f1_macro"],
        "head_only_f1_vs_baseline": run["head-only"]["f1_macro"] - run["baseline"]["f1_macro"],
        "lora_f1_vs_full": run["lora r=8"]["f1_macro"] - defaults["f1_macro"],
        "lora_size_share": run["lora r=8"]["size_bytes"] / defaults["size_bytes"],
        "speed_vs_random_batches": defaults["examples_per_s"]
        / run["random batches (speed)"]["examples_per_s"],
        "speed_vs_old_defaults": defaults["examples_per_s"] / run["old defaults (speed)"]["examples_per_s"],
    }
    return run


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Return each ratio's median and its spread (min, max) over the seeds."""
    out = {}
    for key in runs[0]["ratios"]:
        values = [r["ratios"][key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (splits and initialisation).")
    parser.add_argument("--out", default=str(RESULTS / "finetune.json"))
    args = parser.parse_args()

    work = RESULTS / "work-finetune"
    work.mkdir(parents=True, exist_ok=True)
    # its registry and checkpoints, not the user's
    os.environ["LEPTON_HOME"] = str(work / "home")
    rows = docstrings()
    path = work / "stdlib-docstrings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = {label: sum(r["label"] == label for r in rows) for label in GROUPS}
    runs = [one_seed(path, int(seed)) for seed in args.seeds.split(",")]
    result = {"machine": machine_info(), "machine_line": describe(), "data": {"rows": len(rows), **counts}}
    result.update({"runs": runs, "summary": summary(runs)})
    Path(args.out).write_text(json.dumps(result, indent=2))
    table = Table(title=f"MiniLM on stdlib docstrings ({len(rows)} rows: {counts}) · {describe()}")
    for column in ("seed", "method", "accuracy", "macro-F1", "train s", "examples/s", "artifact MB"):
        table.add_column(column)
    for run in runs:
        for method in ("baseline", *METHODS):
            r = run[method]
            table.add_row(
                str(run["seed"]),
                method,
                f"{r['accuracy']:.3f}",
                f"{r['f1_macro']:.3f}",
                f"{r.get('train_seconds', r['seconds']):.1f}",
                f"{r['examples_per_s']:.1f}" if "examples_per_s" in r and "head" not in method else "",
                f"{r['size_bytes'] / 1e6:.2f}" if "size_bytes" in r else "",
            )
    Console().print(table)
    ratios = Table(title="Over the seeds: median [min, max]")
    ratios.add_column("figure")
    ratios.add_column("value")
    for key, v in result["summary"].items():
        ratios.add_row(key, f"{v['median']:+.3f} [{v['min']:+.3f}, {v['max']:+.3f}]")
    Console().print(ratios)


if __name__ == "__main__":
    main()
