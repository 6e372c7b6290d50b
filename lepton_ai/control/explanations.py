"""A version's explanations on the dashboard: a few test examples of the data it was trained on, each with the
Integrated Gradients overlay of its prediction."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from lepton_ai.errors import InvalidInputError
from lepton_ai.store import Registry, VersionInfo

# examples a page explains at most: a page, not a job
MAX_SHOWN = 16


@dataclass(frozen=True)
class Shown:
    """One explained example: its position in the test split, its label, the class explained, the picture."""

    index: int
    label: str
    target: str
    png_base64: str


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
    """Return `count` test examples of `data` explained for version `ref` (an image or table classifier)."""
    from lepton_ai.data import load
    from lepton_ai.explain import explain
    from lepton_ai.explain.pictures import feature_bars, image_overlay
    from lepton_ai.models import LeptonModel

    if not 1 <= count <= MAX_SHOWN:
        raise InvalidInputError(f"count must be in 1..{MAX_SHOWN}, not {count}")
    model = LeptonModel.load(ref)
    if model.is_text or model.is_embedding:
        raise InvalidInputError(
            f"{ref} is not an image or table classifier: its explanations are not drawn here"
        )
    test = load(data, "test")
    assert test.features is not None
    x = test.features[:count].float()
    got = explain(model, x, "integrated_gradients")
    names = test.meta.get("feature_names") or [f"feature {j}" for j in range(x[0].numel())]
    shown = []
    for i in range(len(x)):
        target = model.classes[int(got.targets[i])]
        png = (
            image_overlay(x[i], got.attributions[i], f"for {target}")
            if x.dim() == 4
            else feature_bars(got.attributions[i], list(names), title=f"for {target}")
        )
        shown.append(Shown(i, test.classes[int(test.labels[i])], target, base64.b64encode(png).decode()))
    return shown
