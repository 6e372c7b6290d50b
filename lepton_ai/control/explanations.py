"""A version's explanations on the dashboard: a few test examples of the data it was trained on, each with the
Integrated Gradients of its prediction (an image's overlay, a table's top features, a text's tokens)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton_ai.errors import InvalidInputError
from lepton_ai.store import Registry, VersionInfo, local_path

if TYPE_CHECKING:
    from lepton_ai.data import LabeledData

# examples a page explains at most: a page, not a job
MAX_SHOWN = 16


@dataclass(frozen=True)
class Shown:
    """One explained example: its position in the test split, its label, the class explained, the picture (and
    a text's tokens as HTML, each token escaped)."""

    index: int
    label: str
    target: str
    png_base64: str
    tokens_html: str = ""


def data_of(registry: Registry, info: VersionInfo, given: str | None) -> str:
    """Return the data a version's explanations are drawn from: `given`, else the dataset version it
    records, else the data its training run was given."""
    if given:
        return given
    if info.dataset:
        return info.dataset
    if info.run_id is not None:
        data = registry.get_run(info.run_id).params.get("data")
        if isinstance(data, str) and data:
            return data
    raise InvalidInputError(f"{info.ref} records no data it was trained on: give ?data=NAME")


def explain_version(ref: str, data: str, count: int) -> list[Shown]:
    """Return `count` test examples of `data` explained for version `ref` (a classifier)."""
    from lepton_ai.data import load
    from lepton_ai.explain.methods import check_explainable, saved_meta
    from lepton_ai.models import LeptonModel

    if not 1 <= count <= MAX_SHOWN:
        raise InvalidInputError(f"count must be in 1..{MAX_SHOWN}, not {count}")
    folder = local_path(ref)
    # an embedding model, or one with no gradients (ONNX Runtime, int8): said why, not explained wrongly
    check_explainable(saved_meta(folder), "integrated_gradients")
    model = LeptonModel.load(folder)
    test = load(data, "test")
    chosen = list(range(min(count, len(test))))
    shown = _texts(model, test, chosen) if model.is_text else _tensors(model, test, chosen)
    return [Shown(i, test.classes[int(test.labels[i])], *rest) for i, rest in zip(chosen, shown)]


def _tensors(model: Any, test: LabeledData, chosen: list[int]) -> list[tuple[str, str]]:
    """Return each chosen image's or table row's predicted class and picture."""
    from lepton_ai.explain import explain
    from lepton_ai.explain.pictures import feature_bars, image_overlay

    if test.features is None:
        raise InvalidInputError(f"{test.name} is text: it does not fit this image or table model")
    x = test.features[chosen].float()
    got = explain(model, x, "integrated_gradients")
    names = test.meta.get("feature_names") or [f"feature {j}" for j in range(x[0].numel())]
    shown = []
    for n in range(len(x)):
        target = model.classes[int(got.targets[n])]
        png = (
            image_overlay(x[n], got.attributions[n], f"for {target}")
            if x.dim() == 4
            else feature_bars(got.attributions[n], list(names), title=f"for {target}")
        )
        shown.append((target, base64.b64encode(png).decode()))
    return shown


def _texts(model: Any, test: LabeledData, chosen: list[int]) -> list[tuple[str, str, str]]:
    """Return each chosen text's predicted class, its tokens' chart and the tokens shaded."""
    from lepton_ai.explain.text import explain_text, token_html, token_png

    if test.texts is None:
        raise InvalidInputError(f"{test.name} is not text: a text classifier is explained on texts")
    shown = []
    for explained in explain_text(model, [test.texts[i] for i in chosen]):
        target = model.classes[explained.target]
        png = base64.b64encode(token_png(explained, f"for {target}")).decode()
        shown.append((target, png, token_html(explained)))
    return shown
