"""What the benchmarks share: the digits model they start from, and writing their JSON atomically."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any


def write_json(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write `doc` to `path` (temp file + rename); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)
    return path


def train_digits_cnn(epochs: int = 10) -> tuple[Any, dict[str, Any], tuple[Any, Any, Any]]:
    """Train cnn-small on digits as `lepton train` does (seed 0, CPU); return the model, its history and
    the (train, val, test) splits."""
    import torch

    from lepton_ai import LeptonModel
    from lepton_ai.data import load

    torch.manual_seed(0)
    splits = tuple(load("digits", s) for s in ("train", "val", "test"))
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        # randomly initialised on purpose
        warnings.simplefilter("ignore")
        model.load_pretrained_model("cnn-small")
    history = model.fit(
        splits[0], splits[1], epochs=epochs, lr=3e-3, batch_size=64, device="cpu", progress=False
    )
    return model, history, splits
