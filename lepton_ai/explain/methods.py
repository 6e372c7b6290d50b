"""The attribution methods offered, by name, and their limits: what can be checked without torch (the HTTP
side of a server checks a request before the model process computes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lepton_ai.errors import InvalidInputError

METHODS = ("integrated_gradients", "saliency", "occlusion", "gradient_shap", "feature_ablation")
# short names the CLI and the endpoint take too
ALIASES = {"ig": "integrated_gradients", "shap": "gradient_shap", "ablation": "feature_ablation"}
# methods that need no gradient (an ONNX artifact can be explained by these)
GRADIENT_FREE = ("occlusion", "feature_ablation")
MAX_STEPS = 256


def method_name(method: str) -> str:
    """Return the method's full name; refuse one that is not offered, naming those that are."""
    name = ALIASES.get(method, method)
    if name not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}: use one of {', '.join(METHODS)} (or ig, shap)")
    return name


def check_steps(steps: int) -> None:
    """Refuse a number of integration steps (or samples) outside 1..MAX_STEPS."""
    if not 1 <= steps <= MAX_STEPS:
        raise InvalidInputError(f"steps must be in 1..{MAX_STEPS}, not {steps}")


def check_targets(targets: list[int], classes: int) -> None:
    """Refuse a class to explain that the model does not have, naming the first such."""
    outside = [t for t in targets if not 0 <= t < classes]
    if outside:
        raise InvalidInputError(
            f"target {outside[0]} is outside the model's {classes} classes (0..{classes - 1})"
        )


def saved_meta(folder: Path) -> dict[str, Any]:
    """Return the lepton.json of a saved model's folder (`store.local_path` of its reference)."""
    import json

    meta_file = folder / "lepton.json"
    if not meta_file.exists():
        raise InvalidInputError(f"{folder} is not a saved Lepton model (no lepton.json)")
    meta: dict[str, Any] = json.loads(meta_file.read_text())
    return meta


def has_gradients(meta: dict[str, Any]) -> bool:
    """Return whether a saved model (its lepton.json) runs where gradients are: not ONNX Runtime, and not
    int8 PyTorch, whose int8 layers pass back zeros without an error."""
    return meta.get("runtime") != "onnxruntime" and (meta.get("recipe") or {}).get("precision") != "int8"


def check_explainable(meta: dict[str, Any], method: str) -> str:
    """Return `method`'s full name; refuse a model (its lepton.json) it cannot explain, saying what can."""
    name, text = method_name(method), meta.get("arch") == "hf"
    if not int(meta.get("num_classes") or 0):
        raise InvalidInputError("an embedding model has no class to explain: explain a classifier")
    runtime = "an ONNX Runtime" if meta.get("runtime") == "onnxruntime" else "an int8 PyTorch"
    if text and not has_gradients(meta):
        raise InvalidInputError(
            f"this is {runtime} text model, with no gradients: a text model is explained through its token "
            "embeddings' gradients; explain the version it was optimised from"
        )
    if text and name != "integrated_gradients":
        raise InvalidInputError(
            f"a text model is explained by integrated_gradients through its token embeddings, not {name}"
        )
    if not has_gradients(meta) and name not in GRADIENT_FREE:
        raise InvalidInputError(
            f"this is {runtime} model, with no gradients: {name} needs them; use "
            f"{' or '.join(GRADIENT_FREE)} (of {', '.join(METHODS)})"
        )
    return name
