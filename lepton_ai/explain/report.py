"""Explanations written for people: each example's picture (an image's overlay, a table row's top features)
and one JSON of the attributions, the targets and, when asked, how faithful they are."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lepton_ai.data import LabeledData
from lepton_ai.errors import InvalidInputError
from lepton_ai.explain.attribution import Explanation, explain
from lepton_ai.explain.pictures import feature_bars, image_overlay
from lepton_ai.explain.scores import faithfulness


@dataclass(frozen=True)
class Written:
    """What `write_explanations` wrote: the JSON document, its path and the pictures."""

    doc: dict[str, Any]
    path: Path
    pictures: list[Path]


def pick(data: LabeledData, index: str) -> list[int]:
    """Return the example positions `index` names: N, or START:STOP (Python's slice, within the data)."""
    try:
        if ":" in index:
            start, stop = (int(p) if p else None for p in index.split(":", 1))
            chosen = list(range(len(data)))[slice(start, stop)]
        else:
            chosen = [int(index)]
    except ValueError:
        raise InvalidInputError(f"--index must be N or START:STOP, not {index!r}") from None
    if not chosen or not all(0 <= i < len(data) for i in chosen):
        raise InvalidInputError(f"--index {index} picks no example of the {len(data)} there are")
    return chosen


def write_explanations(
    model: Any,
    data: LabeledData,
    chosen: list[int],
    out: Path,
    method: str = "integrated_gradients",
    target: int | None = None,
    scores: bool = False,
    steps: int = 32,
) -> Written:
    """Explain the `chosen` examples of `data` with `method`, write each one's PNG and explanations.json into
    `out`, and return what was written (with faithfulness scores if asked)."""
    if data.features is None:
        raise InvalidInputError(f"{data.name} is text: explain an image or table model here")
    x = data.features[chosen].float()
    got = explain(model, x, method, target, steps=steps)
    out.mkdir(parents=True, exist_ok=True)
    pictures = [_picture(out, i, x[n], got, n, data) for n, i in enumerate(chosen)]
    doc: dict[str, Any] = {
        "method": got.method,
        "options": got.options,
        "examples": [
            {
                "index": i,
                "label": data.classes[int(data.labels[i])],
                "target": data.classes[int(got.targets[n])] if data.classes else int(got.targets[n]),
                "attributions": got.attributions[n].tolist(),
                "png": pictures[n].name,
            }
            for n, i in enumerate(chosen)
        ],
    }
    if scores:
        doc["faithfulness"] = faithfulness(model, x, got).to_dict()
    path = out / "explanations.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    return Written(doc, path, pictures)


def _picture(out: Path, index: int, x: torch.Tensor, got: Explanation, n: int, data: LabeledData) -> Path:
    """Write example `index`'s picture and return its path."""
    target = int(got.targets[n])
    title = f"{got.method} for {data.classes[target] if data.classes else target}"
    if x.dim() == 3:
        png = image_overlay(x, got.attributions[n], title)
    else:
        names = data.meta.get("feature_names") or [f"feature {j}" for j in range(x.numel())]
        png = feature_bars(got.attributions[n], list(names), title=title)
    path = out / f"example-{index}.png"
    path.write_bytes(png)
    return path
