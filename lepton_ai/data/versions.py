"""A registered dataset version loaded back as `LabeledData`: its records read from their packs (sha256
checked) or from the manifest itself, one split or all."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import torch

from lepton_ai.data import manifest as m
from lepton_ai.data.labeled import LabeledData
from lepton_ai.data.packs import read_records
from lepton_ai.errors import InvalidInputError
from lepton_ai.store.datasets import Datasets, DatasetVersionInfo


def load_version(
    ref: str, split: str = "all", image_size: int | None = None, datasets: Datasets | None = None
) -> LabeledData:
    """Return dataset version `ref` (`NAME` or `NAME:VERSION`), or its `split`, as LabeledData; images at
    their own size when they all share one, else `image_size` (64 if not given)."""
    datasets = datasets or Datasets()
    info = datasets.get(ref)
    frame = m.read_manifest(datasets.manifest(info))
    if split != "all":
        if split not in ("train", "val", "test"):
            raise InvalidInputError(f"split must be train, val, test or all, not {split!r}")
        frame = frame[frame[m.SPLIT] == split]
    classes = [str(c) for c in info.schema["classes"]]
    meta = {"dataset": info.ref, "keys": list(frame[m.KEY])}
    if info.format in ("imagefolder", "text"):
        raws = read_records(datasets.artifacts, frame[[m.PACK, m.OFFSET, m.LENGTH]].itertuples(index=False))
        labels = torch.tensor([classes.index(c) for c in frame[m.LABEL].tolist()], dtype=torch.long)
        if info.format == "text":
            texts = [raw.decode("utf-8").strip() for raw in raws]
            return LabeledData("text", labels, classes, texts=texts, name=info.ref, meta=meta)
        features = _images(raws, info, image_size)
        return LabeledData(
            "image", labels, classes, features=features, name=info.ref, meta={**meta, "pixel_max": 1.0}
        )
    return _table(frame, info, classes, meta)


def _images(raws: Any, info: DatasetVersionInfo, image_size: int | None) -> torch.Tensor:
    """Return the images as a float tensor (N, C, H, W) in 0..1: one channel if every image is greyscale."""
    from PIL import Image

    image = info.schema["image"]
    grey = image["modes"] in (["L"], ["1"])
    (w0, w1), (h0, h1) = image["width"], image["height"]
    size = (w0, h0) if (w0 == w1 and h0 == h1 and image_size is None) else (image_size or 64,) * 2
    out = []
    for raw in raws:
        with Image.open(io.BytesIO(raw)) as opened:
            pixels = np.asarray(opened.convert("L" if grey else "RGB").resize(size), dtype=np.float32) / 255.0
        out.append(pixels[None] if grey else pixels.transpose(2, 0, 1))
    channels = 1 if grey else 3
    return torch.from_numpy(np.stack(out)) if out else torch.zeros((0, channels, size[1], size[0]))


def _table(
    frame: pd.DataFrame, info: DatasetVersionInfo, classes: list[str], meta: dict[str, Any]
) -> LabeledData:
    label, text = info.schema["label"], info.schema.get("text")
    labels = torch.tensor([classes.index(c) for c in frame[label].astype(str).tolist()], dtype=torch.long)
    if text:
        return LabeledData("text", labels, classes, texts=list(frame[text]), name=info.ref, meta=meta)
    columns = [c for c in frame.columns if not str(c).startswith("_") and c != label]
    numeric = [c for c in columns if info.schema["columns"][c]["type"] in ("integer", "number", "boolean")]
    features = torch.tensor(frame[numeric].to_numpy(dtype=np.float32))
    return LabeledData(
        "tabular", labels, classes, features=features, name=info.ref, meta={**meta, "feature_names": numeric}
    )
