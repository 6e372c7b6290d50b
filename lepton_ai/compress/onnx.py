"""ONNX export and ONNX Runtime inference: the portable, fast path for served models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lepton_ai.errors import InvalidInputError


class _TokensToLogits(nn.Module):
    """Presents a text model as (input_ids, attention_mask) -> logits, the shape ONNX needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask})


def _example(model: nn.Module) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str], dict[str, dict[int, str]]]:
    if getattr(model, "is_text", False):
        tokens = model.net.tokenize(["an example sentence", "another"])  # type: ignore[union-attr]
        args = (tokens["input_ids"], tokens["attention_mask"])
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"}}
        return _TokensToLogits(model), args, ["input_ids", "attention_mask"], axes
    size = tuple(getattr(model, "input_size", ()) or ())
    if not size:
        raise InvalidInputError("the model has no input_size: give export_onnx an example input")
    return model, (torch.zeros(2, *size),), ["input"], {"input": {0: "batch"}, "logits": {0: "batch"}}


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor | None = None, opset: int = 17) -> Path:
    """Export `model` (batch dimension dynamic) to the ONNX file `path`, atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module, args, names, axes = _example(model) if example is None else (
        model, (example,), ["input"], {"input": {0: "batch"}, "logits": {0: "batch"}})
    module = module.eval().cpu()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            # TorchScript-based exporter: fast, and produces graphs ORT fuses and quantizes well.
            torch.onnx.export(module, args, tmp, input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxModel:
    """An ONNX file run by ONNX Runtime on CPU, called like the PyTorch model it came from."""

    def __init__(self, path: str | Path, threads: int | None = None, tokenizer: Any = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizer

    def __call__(self, x: Any) -> torch.Tensor:
        """Return logits for a tensor batch, token tensors, or a list of strings (with a tokenizer)."""
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
            if self.tokenizer is None:
                raise InvalidInputError("this ONNX model needs a tokenizer to take strings")
            x = self.tokenizer(list(x), padding=True, truncation=True, max_length=128, return_tensors="pt")
        if isinstance(x, dict) or hasattr(x, "keys"):
            feeds = {n: np.asarray(x[n].cpu().numpy() if isinstance(x[n], torch.Tensor) else x[n], dtype=np.int64)
                     for n in self.input_names}
        else:
            arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            feeds = {self.input_names[0]: arr.astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def predict(self, x: Any) -> torch.Tensor:
        """Return the predicted class id of each input."""
        return self(x).argmax(-1)
