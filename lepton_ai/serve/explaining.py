"""`POST /explain` for a served model: each example's attributions (and a PNG overlay on request), computed in
batches like predictions and cached by (model digest, input, method, options)."""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lepton_ai.errors import InvalidInputError
from lepton_ai.explain.methods import GRADIENT_FREE, METHODS, check_steps, check_targets, method_name

if TYPE_CHECKING:
    import torch

# examples one request may ask to explain, and explanations a worker keeps
MAX_EXAMPLES, CACHED = 64, 4096


def check_request(
    meta: dict[str, Any], onnx: bool, count: int, method: str, target: int | None, steps: int
) -> str:
    """Return the method's full name; refuse what this model cannot explain, saying what it can."""
    name = method_name(method)
    classes = int(meta.get("num_classes") or 0)
    if not classes:
        raise InvalidInputError("an embedding model has no class to explain: explain a classifier")
    if onnx and name not in GRADIENT_FREE:
        raise InvalidInputError(
            f"this is an ONNX Runtime model, with no gradients: {name} needs them; use "
            f"{' or '.join(GRADIENT_FREE)} (of {', '.join(METHODS)})"
        )
    check_targets([] if target is None else [target], classes)
    check_steps(steps)
    if count > MAX_EXAMPLES:
        raise InvalidInputError(f"explain at most {MAX_EXAMPLES} examples a request, not {count}")
    return name


def model_digest(folder: Path) -> str:
    """Return the sha256 of a saved model's files (what its explanations are cached under)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class Explainer:
    """Explains batches of examples for one served model, keeping the latest CACHED explanations. A Photon's
    author gets `/explain` from it in a few lines::

        class Mine(Photon):
            def init(self):
                self.model = LeptonModel.load("digits-cnn")
                self.explainer = Explainer(self.model, digest="digits-cnn:1")

            @handler(max_batch_size=16)
            def explain(self, inputs: list[list[float]], method: str = "ig", png: bool = False) -> list[dict]:
                x = np.asarray(inputs, np.float32).reshape(-1, 1, 8, 8)
                return self.explainer.rows(x, method_name(method), None, png, 32)
    """

    def __init__(self, runnable: Any, digest: str) -> None:
        self.runnable, self.digest = runnable, digest
        self.cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    def rows(
        self, x: np.ndarray, method: str, target: int | None, png: bool, steps: int
    ) -> list[dict[str, Any]]:
        """Return one explanation per example: the class explained, attributions shaped like it, a PNG."""
        keys = [(self.digest, hashlib.sha256(e.tobytes()).hexdigest(), method, target, png, steps) for e in x]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            import torch

            from lepton_ai.explain.attribution import explain

            got = explain(self._forward, torch.from_numpy(x[missing]), method, target, steps=steps)
            for n, i in enumerate(missing):
                self.cache[keys[i]] = self._row(x[i], got.attributions[n], int(got.targets[n]), png)
                if len(self.cache) > CACHED:
                    self.cache.popitem(last=False)
        for k in keys:
            self.cache.move_to_end(k)
        return [self.cache[k] for k in keys]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runnable(x).float()

    @staticmethod
    def _row(example: np.ndarray, attribution: torch.Tensor, target: int, png: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"target": target, "attributions": attribution.contiguous().numpy()}
        if png:
            import torch

            from lepton_ai.explain.pictures import feature_bars, image_overlay

            picture = (
                image_overlay(torch.from_numpy(example), attribution)
                if example.ndim == 3
                else feature_bars(attribution, [f"feature {j}" for j in range(attribution.numel())])
            )
            row["png"] = base64.b64encode(picture).decode()
        return row
