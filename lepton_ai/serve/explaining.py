"""`POST /explain` for a served model: each example's attributions (and a PNG overlay on request), computed in
batches like predictions and cached by (model digest, input, method, options)."""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lepton_ai.errors import InvalidInputError
from lepton_ai.explain.methods import check_explainable, check_steps, check_targets

if TYPE_CHECKING:
    import torch

# examples one request may ask to explain (texts: each is a path of forward passes through a transformer),
# and explanations a worker keeps
MAX_EXAMPLES, MAX_TEXTS, CACHED = 64, 16, 4096


def check_request(meta: dict[str, Any], count: int, method: str, target: int | None, steps: int) -> str:
    """Return the method's full name; refuse what this model cannot explain, saying what it can."""
    name, text = check_explainable(meta, method), meta.get("arch") == "hf"
    classes = int(meta["num_classes"])
    check_targets([] if target is None else [target], classes)
    check_steps(steps)
    limit = MAX_TEXTS if text else MAX_EXAMPLES
    if count > limit:
        raise InvalidInputError(
            f"explain at most {limit} {'texts' if text else 'examples'} a request, not {count}"
        )
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

            @handler(max_batch_size=16, answers="explanations")
            def explain(self, inputs: list[list[float]], method: str = "ig", png: bool = False) -> list[dict]:
                x = np.asarray(inputs, np.float32).reshape(-1, 1, 8, 8)
                return self.explainer.rows(x, method_name(method), None, png, 32)
    """

    def __init__(self, runnable: Any, digest: str, device: str = "cpu") -> None:
        self.runnable, self.digest, self.device = runnable, digest, device
        self.cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    def rows(
        self, x: np.ndarray, method: str, target: int | None, png: bool, steps: int
    ) -> list[dict[str, Any]]:
        """Return one explanation per example: the class explained, attributions shaped like it, a PNG."""

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            import torch

            from lepton_ai.explain.attribution import explain

            got = explain(self._forward, torch.from_numpy(x[missing]), method, target, steps=steps)
            return [
                self._row(x[i], got.attributions[n], int(got.targets[n]), png) for n, i in enumerate(missing)
            ]

        return self._cached([self._key(e.tobytes(), method, target, png, steps) for e in x], compute)

    def text_rows(self, texts: list[str], target: int | None, png: bool, steps: int) -> list[dict[str, Any]]:
        """Return one explanation per text: the class explained, its tokens and each one's attribution, a
        PNG with png."""

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            from lepton_ai.explain.text import explain_text, token_png

            got = explain_text(self.runnable, [texts[i] for i in missing], target, steps)
            rows = [{"target": g.target, "tokens": g.tokens, "attributions": g.scores} for g in got]
            if png:
                for row, g in zip(rows, got):
                    row["png"] = base64.b64encode(token_png(g)).decode()
            return rows

        keys = [self._key(t.encode(), "integrated_gradients", target, png, steps) for t in texts]
        return self._cached(keys, compute)

    def _key(self, example: bytes, method: str, target: int | None, png: bool, steps: int) -> tuple[Any, ...]:
        return (self.digest, hashlib.sha256(example).hexdigest(), method, target, png, steps)

    def _cached(
        self, keys: list[tuple[Any, ...]], compute: Callable[[list[int]], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Return the explanation of each key, computing those not in the cache (by their positions)."""
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            for i, row in zip(missing, compute(missing)):
                self.cache[keys[i]] = row
                if len(self.cache) > CACHED:
                    self.cache.popitem(last=False)
        for k in keys:
            self.cache.move_to_end(k)
        return [self.cache[k] for k in keys]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # Captum builds the path on the CPU; the model may compute on a GPU (gradients cross back)
        return self.runnable(x.to(self.device)).float().cpu()

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
