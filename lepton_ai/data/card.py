"""A dataset version's card: Markdown (what it holds, where it came from, what was left out and why, its
schema) and pictures (the class balance; a grid of sample images, or each numeric column's histogram)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lepton_ai.data.versions import load_version
from lepton_ai.store.datasets import Datasets, DatasetVersionInfo

# sample images on the card, and numeric columns drawn
_SAMPLES, _COLUMNS = 32, 12


def write_card(ref: str, folder: Path, datasets: Datasets | None = None) -> list[Path]:
    """Write the card of dataset version `ref` into `folder` (card.md and its PNGs); return the files."""
    import matplotlib

    matplotlib.use("Agg")
    datasets = datasets or Datasets()
    info = datasets.get(ref)
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [_classes(info, folder / "classes.png")]
    data = load_version(info.ref, "all", datasets=datasets)
    if data.kind == "image":
        pictures.append(_samples(data, folder / "samples.png"))
    elif data.kind == "tabular":
        pictures.append(_columns(data, folder / "columns.png"))
    card = folder / "card.md"
    card.write_text(_markdown(info, pictures), encoding="utf-8")
    return [card, *pictures]


def _markdown(info: DatasetVersionInfo, pictures: list[Path]) -> str:
    stats = info.stats
    lines = [
        f"# {info.ref}",
        "",
        f"{info.records:,} records ({info.format}) from `{info.source}`, added {info.created_at}.",
        "",
        "| split | records |",
        "|---|---|",
        *(f"| {s} | {n:,} |" for s, n in stats.get("splits", {}).items()),
        "",
        f"Left out: {stats.get('quarantined', 0):,} quarantined, "
        f"{stats.get('duplicates', 0):,} exact duplicates; "
        f"{stats.get('near_duplicates', 0):,} near duplicates kept in one split; "
        f"{stats.get('label_issues', 'not looked for')} likely wrong labels.",
        "",
        *(f"![{p.stem}]({p.name})" for p in pictures),
        "",
        "## Quarantined",
        "",
        *(f"- `{q['record']}`: {q['reason']}" for q in stats.get("quarantine", [])[:50]),
        "",
        "## Schema",
        "",
        "```json",
        json.dumps(info.schema, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _classes(info: DatasetVersionInfo, path: Path) -> Path:
    import matplotlib.pyplot as plt

    classes: dict[str, Any] = info.stats.get("classes", {})
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(classes)), 3))
    ax.bar(list(classes), list(classes.values()), color="#4c72b0")
    ax.set_title(f"{info.ref}: records by class")
    ax.set_ylabel("records")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _samples(data: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    picked = np.random.default_rng(0).choice(len(data), min(_SAMPLES, len(data)), replace=False)
    columns = 8
    rows = (len(picked) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns, rows * 1.15), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picked):
        image = data.features[i].numpy()
        ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_title(data.classes[int(data.labels[i])], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _columns(data: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = data.meta["feature_names"][:_COLUMNS]
    columns = 4
    rows = (len(names) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (j, name) in zip(axes.flat, enumerate(names)):
        ax.axis("on")
        ax.hist(data.features[:, j].numpy(), bins=30, color="#55a868")
        ax.set_title(str(name), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
