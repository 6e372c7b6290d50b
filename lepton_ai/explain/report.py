"""Explanations written for people: each example's picture (an image's overlay, a table row's top features, a
text's tokens as a page and a chart) and one JSON of the attributions, the targets and, when asked, how
faithful they are."""

from __future__ import annotations

import html
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
    return Written(doc, _write_json(out / "explanations.json", doc), pictures)


def write_text_explanations(
    model: Any, data: LabeledData, chosen: list[int], out: Path, target: int | None = None, steps: int = 32
) -> Written:
    """Explain the `chosen` texts of `data` through the model's token embeddings (Integrated Gradients), write
    each one's HTML page and PNG and explanations.json into `out`, and return what was written."""
    from lepton_ai.explain.text import explain_text, token_html, token_png

    if data.texts is None:
        raise InvalidInputError(f"{data.name} is not text: a text classifier is explained on texts")
    got = explain_text(model, [data.texts[i] for i in chosen], target, steps)
    out.mkdir(parents=True, exist_ok=True)
    examples, pictures = [], []
    for i, explained in zip(chosen, got):
        name = data.classes[explained.target] if data.classes else explained.target
        title = f"integrated_gradients for {name}"
        png, page = out / f"example-{i}.png", out / f"example-{i}.html"
        png.write_bytes(token_png(explained, title))
        page.write_text(
            f'<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<p>{token_html(explained)}</p>\n"
        )
        pictures.append(png)
        label = data.classes[int(data.labels[i])] if data.classes else int(data.labels[i])
        examples.append(
            {"index": i, "label": label, "target": name, "tokens": explained.tokens}
            | {"attributions": explained.scores, "png": png.name, "html": page.name}
        )
    doc = {"method": "integrated_gradients", "options": {"steps": steps}, "examples": examples}
    return Written(doc, _write_json(out / "explanations.json", doc), pictures)


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    """Write `doc` to `path` at once (a temporary file renamed) and return the path."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    return path


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
