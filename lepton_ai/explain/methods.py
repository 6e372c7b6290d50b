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
