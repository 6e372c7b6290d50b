"""The attribution methods offered, by name, and their limits: what can be checked without torch (the HTTP
side of a server checks a request before the model process computes it)."""

from __future__ import annotations

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
