"""Data sets: scikit-learn's bundled sets, CSV/JSONL files and image folders (labelled), and
plain sentences for embedding models (a text file of one per line, or `python-docs`), split
the same way every time (stratified, seeded)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lepton_ai.data.labeled import LabeledData
from lepton_ai.data.sources import IMAGE_SUFFIXES
from lepton_ai.errors import InvalidInputError, NotFoundError

Split = Literal["train", "val", "test", "all"]
BUILTIN = ("digits", "breast_cancer", "wine", "iris", "python-docs")


def split_indices(
    labels: np.ndarray, seed: int = 0, val: float = 0.1, test: float = 0.2
) -> dict[str, np.ndarray]:
    """Return stratified train/val/test index arrays, the same for the same labels and seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 3 else None
    rest, test_idx = train_test_split(idx, test_size=test, random_state=seed, stratify=stratify)
    rest_labels = labels[rest] if stratify is not None else None
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1 - test), random_state=seed, stratify=rest_labels
    )
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


def _encode_labels(raw: list[Any]) -> tuple[torch.Tensor, list[str]]:
    names = sorted(
        {str(v) for v in raw},
        key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s),
    )
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[str(v)] for v in raw], dtype=torch.long), names


def _sentences(texts: list[str], name: str) -> LabeledData:
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise InvalidInputError(f"{name} holds no sentences: expected one sentence per line")
    return LabeledData("text", torch.zeros(len(texts), dtype=torch.long), [], texts=texts, name=name)


def _python_docs() -> LabeledData:
    """Real English sentences from the Python documentation that ships with the interpreter."""
    import re
    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", " ".join(topics.values()))
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return _sentences(
        list(dict.fromkeys(s for s in sentences if 40 <= len(s) <= 300 and s[0].isupper())), "python-docs"
    )


def _builtin(name: str) -> LabeledData:
    from sklearn import datasets

    if name == "python-docs":
        return _python_docs()
    bunch = getattr(datasets, f"load_{name}")()
    classes = [str(c) for c in getattr(bunch, "target_names", range(int(bunch.target.max()) + 1))]
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    # 8×8 grey images with values 0..16
    if name == "digits":
        return LabeledData(
            "image",
            labels,
            classes,
            features=torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1),
            name=name,
            meta={"pixel_max": 16.0},
        )
    return LabeledData(
        "tabular",
        labels,
        classes,
        features=torch.tensor(bunch.data, dtype=torch.float32),
        name=name,
        meta={"feature_names": [str(f) for f in bunch.feature_names]},
    )


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise InvalidInputError(f"{path}:{n} is not valid JSON: {e.msg}") from e
        return rows
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _table(path: Path, label: str, text: str | None) -> LabeledData:
    rows = _rows(path)
    if not rows:
        raise InvalidInputError(f"{path} holds no rows")
    columns = list(rows[0])
    if label not in columns:
        raise InvalidInputError(
            f"{path} has no label column {label!r} (columns: {', '.join(columns)}); name it with --label"
        )
    labels, classes = _encode_labels([r.get(label) for r in rows])
    text_col = text if text else ("text" if "text" in columns else None)
    if text_col:
        if text_col not in columns:
            raise InvalidInputError(f"{path} has no text column {text_col!r} (columns: {', '.join(columns)})")
        return LabeledData("text", labels, classes, texts=_texts(path, rows, text_col), name=path.stem)
    feature_cols = [c for c in columns if c != label]
    try:
        values = [[float(r[c]) for c in feature_cols] for r in rows]
    except (TypeError, ValueError, KeyError) as e:
        raise InvalidInputError(
            f"{path}: every column but {label!r} must be numeric for tabular data ({e}); "
            "for text, name the text column with --text"
        ) from e
    return LabeledData(
        "tabular",
        labels,
        classes,
        features=torch.tensor(values, dtype=torch.float32),
        name=path.stem,
        meta={"feature_names": feature_cols},
    )


def _texts(path: Path, rows: list[dict[str, Any]], column: str) -> list[str]:
    """Return each row's text, or raise naming the rows that have none (an empty text teaches nothing)."""
    texts = ["" if r.get(column) is None else str(r[column]).strip() for r in rows]
    empty = [n for n, t in enumerate(texts, 1) if not t]
    if len(empty) == len(texts):
        raise InvalidInputError(f"{path}: the text column {column!r} is empty in every row")
    if empty:
        rows_named = ", ".join(map(str, empty[:5])) + (", …" if len(empty) > 5 else "")
        raise InvalidInputError(
            f"{path}: {len(empty)} of {len(texts)} rows have no text in column {column!r} "
            f"(rows {rows_named}): fill them in or leave them out"
        )
    return texts


def _image_folder(root: Path, image_size: int) -> LabeledData:
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise InvalidInputError(f"{root} has no class folders: expected {root}/<class>/<image>.png")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as opened:
                    img = opened.convert("RGB").resize((image_size, image_size))
                    images.append(
                        torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
                    )
                labels.append(label)
    if not images:
        raise InvalidInputError(
            f"{root} has class folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return LabeledData(
        "image",
        torch.tensor(labels),
        classes,
        features=torch.stack(images),
        name=root.name,
        meta={"pixel_max": 1.0},
    )


def load(
    name_or_path: str | Path,
    split: Split = "all",
    *,
    label: str = "label",
    text: str | None = None,
    seed: int = 0,
    val: float = 0.1,
    test: float = 0.2,
    image_size: int | None = None,
) -> LabeledData:
    """Return a data set (`digits`, `breast_cancer`, `wine`, `iris`, `python-docs`, a registered dataset
    `NAME[:VERSION]` with its own splits, a CSV/JSONL file, a .txt file of one sentence per line or an image
    folder), or its deterministic `split`."""
    key = str(name_or_path)
    if key in BUILTIN:
        data = _builtin(key)
    else:
        path = Path(key).expanduser()
        if not path.exists():
            return _registered(key, split, image_size)
        if path.is_dir():
            data = _image_folder(path, image_size or 64)
        elif path.suffix.lower() == ".txt":
            data = _sentences(path.read_text(encoding="utf-8").splitlines(), path.stem)
        else:
            data = _table(path, label, text)
    if split == "all":
        return data
    if split not in ("train", "val", "test"):
        raise InvalidInputError(f"split must be train, val, test or all, not {split!r}")
    return data.subset(split_indices(data.labels.numpy(), seed, val, test)[split], suffix=f"[{split}]")


def _registered(ref: str, split: Split, image_size: int | None) -> LabeledData:
    """Return the registered dataset version `ref`'s `split` (splits made when it was added)."""
    from lepton_ai.data.versions import load_version
    from lepton_ai.store.datasets import Datasets

    datasets = Datasets()
    if datasets.find(ref.partition(":")[0]) is None:
        raise NotFoundError(
            f"no data set {ref!r}: use one of {', '.join(BUILTIN)}, a dataset added with `lepton data add`, "
            "a CSV/JSONL file, a .txt file of sentences or an image folder"
        )
    return load_version(ref, split, image_size, datasets)
