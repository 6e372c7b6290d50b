"""Explanations: attributions of a model's decisions (Captum), as pictures, with how faithful they are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton_ai.lazy import lazy_names

if TYPE_CHECKING:
    from lepton_ai.explain.attribution import Explanation, explain
    from lepton_ai.explain.methods import METHODS
    from lepton_ai.explain.scores import Faithfulness, faithfulness

_HOMES = {
    "METHODS": ".methods",
    "Explanation": ".attribution",
    "explain": ".attribution",
    "Faithfulness": ".scores",
    "faithfulness": ".scores",
}
__getattr__ = lazy_names(__name__, _HOMES)

__all__ = ["METHODS", "Explanation", "Faithfulness", "explain", "faithfulness"]
