"""A Photon generated for a registered model: `POST /predict {"inputs": [example, ...]}`.

Each example is shaped like the model's input: numbers or nested lists (any nesting whose
size matches the input size), a base64-encoded image for image models, or a string for text
models. Classifiers answer class ids, their names with `"return_labels": true`, probabilities with
`"return_probs": true` (both: one {name: probability} per example); embedding models answer vectors.
Works for every runtime `load_runnable` returns (PyTorch, int8, ONNX Runtime)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import cpu_info
from lepton_ai.serve.explaining import Explainer, check_request
from lepton_ai.serve.images import ImageReader
from lepton_ai.serve.photon import Photon, handler

# a larger number is infinite once it is float32
_FLOAT32_MAX = float(np.finfo(np.float32).max)
TensorExample = Annotated[
    str | float | list[Any],
    Field(description="numbers or nested lists shaped like the model's input, or a base64-encoded image"),
]
TextExample = Annotated[str, Field(description="a text")]


def eager_threads(threads: int | None = None) -> int:
    """Return the compute threads of an eager PyTorch model under `lepton serve`: `threads`, else all cores
    but one. The event loop needs a core of its own: in one process eager PyTorch holds the GIL between ops,
    and in a model process of its own another thread's OpenMP spinning takes the event loop's core (the
    figures are in benchmarks/RESULTS.md). ONNX Runtime releases the GIL and gets all cores."""
    return threads or max(1, cpu_info()["cores"] - 1)


class ModelPhoton(Photon):
    """A registered model served with no code: `predict` batches examples across requests."""

    default_batch_size = 64

    def __init__(self, ref: str, device: str = "cpu", threads: int | None = None) -> None:
        from lepton_ai.store import local_path

        path = local_path(ref)
        meta_file = path / "lepton.json"
        if not meta_file.exists():
            raise InvalidInputError(
                f"{ref} is not a saved Lepton model (no lepton.json): it cannot be served"
            )
        self.ref, self.meta, self.device, self.threads = (
            ref,
            json.loads(meta_file.read_text()),
            device,
            threads,
        )
        self.path = path
        # this worker's share of the machine
        self.cores = threads or cpu_info()["cores"]
        self.input_size = tuple(self.meta.get("input_size") or ())
        pixel_max = float((self.meta.get("preprocess") or {}).get("pixel_max", 1.0))
        # a model over (C, H, W) also takes images
        self.images = ImageReader(self.input_size, pixel_max) if len(self.input_size) == 3 else None
        if device != "cpu" and self.meta.get("runtime") == "onnxruntime":
            raise InvalidInputError(f"{ref} is an ONNX Runtime model, served on CPU here: use --device cpu")
        self.runnable: Any = None
        self.explainer: Explainer | None = None
        # Eager PyTorch on CPU computes in a process of its own, given a core besides the event loop's (on
        # one they only take turns, with a hop between, and p99 was higher than in one process: see
        # benchmarks/RESULTS.md). ONNX Runtime releases the GIL as it computes and a GPU computes on the
        # device: they stay in the server's process.
        self.model_process = device == "cpu" and not self.onnx and self.cores >= 2

    def init(self) -> None:
        """Load the model (verified from the registry) onto its device."""
        import torch

        from lepton_ai.compress import load_runnable

        self.runnable = load_runnable(self.path, threads=self._onnx_threads() if self.onnx else self.threads)
        if isinstance(self.runnable, torch.nn.Module):
            self.runnable = self.runnable.to(self.device).eval()
            torch.set_num_threads(eager_threads(self.threads))

    def _onnx_threads(self) -> int | None:
        """Return ONNX Runtime's threads per call: the cores shared out among the batches run at once."""
        batches = type(self).handlers()["predict"].concurrency
        return max(1, 2 * self.cores // batches) if batches > 1 else self.threads

    @property
    def onnx(self) -> bool:
        """Return whether the model runs on ONNX Runtime (which releases the GIL while it computes)."""
        return self.meta.get("runtime") == "onnxruntime"

    def describe(self) -> tuple[str, str]:
        """Return the model's reference as the API docs' title, and what it is, takes and answers."""
        runtime = "ONNX Runtime" if self.onnx else "PyTorch"
        takes = "texts" if self.meta.get("arch") == "hf" else f"inputs of size {list(self.input_size)}"
        classes = ", ".join(str(c) for c in self.meta.get("classes") or [])
        answers = (
            "embeddings"
            if self.is_embedding
            else f"class ids over {self.meta.get('num_classes')} classes (names with return_labels: "
            f"{classes}; probabilities with return_probs)"
        )
        return self.ref, (
            f"The registered model {self.ref} ({self.meta.get('arch', 'model')}, {runtime}): "
            f"takes {takes}, answers {answers}."
        )

    def example_schema(self, name: str) -> dict[str, Any] | None:
        """Return what one example is: the input's numbers flat or nested in its shape (float32's range), or a
        base64-encoded image for a model over (C, H, W); a text model takes any string."""
        if self.meta.get("arch") == "hf":
            return None
        number = {"type": "number", "minimum": -_FLOAT32_MAX, "maximum": _FLOAT32_MAX}
        size = math.prod(self.input_size)
        nested: dict[str, Any] = number
        for n in reversed(self.input_size):
            nested = {"type": "array", "items": nested, "minItems": n, "maxItems": n}
        forms = [{"type": "array", "items": number, "minItems": size, "maxItems": size}]
        if len(self.input_size) > 1:
            forms.append(nested)
        if size == 1:
            forms.append(number)
        if self.images:
            forms.append({"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*"})
        return forms[0] if len(forms) == 1 else {"anyOf": forms}

    @property
    def is_embedding(self) -> bool:
        """Return whether the model answers vectors (an embedding model) rather than classes."""
        return int(self.meta.get("num_classes", 0)) == 0

    def _outputs(self, inputs: Any, return_probs: bool, return_labels: bool = False) -> Any:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(inputs).to(self.device) if isinstance(inputs, np.ndarray) else inputs
            out = self.runnable(x).float().cpu()
        if self.is_embedding:
            # unit vectors, as embed() gives them (a sentence encoder's already are)
            return torch.nn.functional.normalize(out, dim=-1)
        if not return_labels:
            return torch.softmax(out, -1) if return_probs else out.argmax(-1)
        names = [str(c) for c in self.meta.get("classes") or range(out.shape[-1])]
        if return_probs:
            return [dict(zip(names, row)) for row in torch.softmax(out, -1).tolist()]
        return [names[i] for i in out.argmax(-1).tolist()]

    def _explain_options(
        self, count: int, method: str, target: int | None, png: bool, steps: int
    ) -> dict[str, Any]:
        """Return an explain request's options, its method by full name; refuse what this model cannot do."""
        name = check_request(self.meta, count, method, target, steps)
        return {"method": name, "target": target, "png": png, "steps": steps}

    def _explainer(self) -> Explainer:
        """Return this worker's explainer, made on first use (the model's digest names its cache)."""
        if self.explainer is None:
            from lepton_ai.serve.explaining import model_digest

            self.explainer = Explainer(self.runnable, model_digest(self.path), self.device)
        return self.explainer

    def _decode(self, i: int, example: Any) -> np.ndarray:
        expected = math.prod(self.input_size)
        if isinstance(example, str):
            if self.images is None:
                raise InvalidInputError(
                    f"inputs[{i}]: a string was given but this model takes "
                    f"{expected} numbers (input size {list(self.input_size)})"
                )
            return self.images.decode([example], self._decode)[0]
        try:
            arr = np.asarray(example, dtype=np.float32)
        except (ValueError, TypeError, OverflowError) as e:
            # ragged lists, strings among numbers, 1e400-sized ints
            raise InvalidInputError(f"inputs[{i}]: not an array of numbers ({e})") from None
        if arr.size != expected:
            raise InvalidInputError(
                f"inputs[{i}]: expected {expected} numbers (input size {list(self.input_size)}), "
                f"got {arr.size}"
            )
        return arr.reshape(self.input_size)

    def examples(self, inputs: list[Any]) -> np.ndarray:
        """Return the examples as one float32 array (N, *input_size); raise naming the first bad one."""
        # the fast path: every example already a list of numbers of the right size
        try:
            arr = np.asarray(inputs, dtype=np.float32)
            if arr.ndim < 2 or arr[0].size != math.prod(self.input_size):
                raise ValueError
            arr = arr.reshape(len(inputs), *self.input_size)
        except (ValueError, TypeError, OverflowError):
            # not one clean array: images, or a bad example to find and name
            arr = (
                self.images.decode(inputs, self._decode)
                if self.images
                else np.stack([self._decode(i, x) for i, x in enumerate(inputs)])
            )
        if not np.isfinite(arr).all():
            bad = int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(1))[0])
            raise InvalidInputError(f"inputs[{bad}]: NaN or infinite values")
        return arr


class TensorModelPhoton(ModelPhoton):
    """A model over numbers or images."""

    @handler(max_batch_size=64, max_wait_ms=5)
    def predict(
        self, inputs: list[TensorExample], return_probs: bool = False, return_labels: bool = False
    ) -> list[Any]:
        """Predict class ids (names with return_labels, probabilities with return_probs; vectors for embedding
        models)."""
        return self._outputs(
            inputs if isinstance(inputs, np.ndarray) else self.examples(inputs), return_probs, return_labels
        )

    @predict.prepare
    def _check(self, inputs: list[Any], return_probs: bool = False, return_labels: bool = False) -> Any:
        options = {"return_probs": return_probs, "return_labels": return_labels}
        if self.images and any(isinstance(x, str) for x in inputs):
            # decoded on the reader's thread within its budget, not on the event loop
            return self._decoded(self.images, inputs, options)
        return {"inputs": self.examples(inputs), **options}

    async def _decoded(
        self, images: ImageReader, inputs: list[Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        return {"inputs": await images.decode_off_loop(inputs, self._decode), **options}

    @handler(max_batch_size=16, max_wait_ms=5, answers="explanations")
    def explain(
        self,
        inputs: list[TensorExample],
        method: str = "integrated_gradients",
        target: int | None = None,
        png: bool = False,
        steps: int = 32,
    ) -> list[Any]:
        """Explain each example's predicted class (or `target`): attributions shaped like the example (by
        integrated_gradients, saliency, occlusion, gradient_shap or feature_ablation), a PNG with png."""
        x = inputs if isinstance(inputs, np.ndarray) else self.examples(inputs)
        return self._explainer().rows(x, method, target, png, steps)

    @explain.prepare
    def _check_explain(self, inputs: list[Any], **options: Any) -> dict[str, Any]:
        return {**self._explain_options(len(inputs), **options), "inputs": self.examples(inputs)}


class TextModelPhoton(ModelPhoton):
    """A model over texts (a classifier or a sentence encoder)."""

    @handler(max_batch_size=32, max_wait_ms=5)
    def predict(
        self, inputs: list[TextExample], return_probs: bool = False, return_labels: bool = False
    ) -> list[Any]:
        """Predict class ids (names with return_labels, probabilities with return_probs; embeddings for
        embedding models)."""
        return self._outputs(list(inputs), return_probs, return_labels)

    @handler(max_batch_size=8, max_wait_ms=5, answers="explanations")
    def explain(
        self,
        inputs: list[TextExample],
        method: str = "integrated_gradients",
        target: int | None = None,
        png: bool = False,
        steps: int = 32,
    ) -> list[Any]:
        """Explain each text's predicted class (or `target`): its tokens, each with its attribution by
        integrated gradients through the token embeddings, and a PNG with png."""
        return self._explainer().text_rows(list(inputs), target, png, steps)

    @explain.prepare
    def _check_explain(self, inputs: list[str], **options: Any) -> dict[str, Any]:
        return {**self._explain_options(len(inputs), **options), "inputs": inputs}


def model_photon(ref: str, device: str = "cpu", threads: int | None = None) -> ModelPhoton:
    """Return the Photon that serves the registered model `ref` (text or tensor inputs)."""
    probe = ModelPhoton(ref, device, threads)
    cls: type[ModelPhoton] = TextModelPhoton if probe.meta.get("arch") == "hf" else TensorModelPhoton
    if probe.onnx:
        # Whole batches side by side, each on one ONNX Runtime thread, two per core, rather than one batch
        # split across every core: a split batch waits at each barrier for a core the event loop has taken,
        # and under load the HTTP side's few percent of CPU cost it a large share of throughput; a second
        # batch per core keeps the core busy while the first one's results go out (benchmarks/RESULTS.md).
        # At most 8 batches at once: on a big machine each gets several threads (see `_onnx_threads`).
        predict = replace(cls.__dict__["predict"], concurrency=min(8, 2 * probe.cores))
        cls = type(cls.__name__, (cls,), {"predict": predict, "__module__": __name__})
    # already fetched and verified: not again
    photon = cls(str(probe.path), device, threads)
    photon.ref = ref
    return photon
