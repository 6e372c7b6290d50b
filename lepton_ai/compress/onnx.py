"""ONNX export and ONNX Runtime inference: the portable, fast path for served models."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lepton_ai.data.inputs import Learner
from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import cpu_info


class _TokensToLogits(nn.Module):
    """Presents a text model as (input_ids, attention_mask) -> logits, the shape ONNX needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask})


def _example(
    model: nn.Module,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str], dict[str, dict[int, str]]]:
    output = "embeddings" if getattr(model, "is_embedding", False) else "logits"
    if isinstance(model, Learner) and model.is_text:
        tokens = model.tokenize(["an example sentence", "another"])
        args = (tokens["input_ids"], tokens["attention_mask"])
        axes = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            output: {0: "batch"},
        }
        return _TokensToLogits(model), args, ["input_ids", "attention_mask"], axes
    size = tuple(getattr(model, "input_size", ()) or ())
    if not size:
        raise InvalidInputError("the model has no input_size: give export_onnx an example input")
    return model, (torch.zeros(2, *size),), ["input"], {"input": {0: "batch"}, output: {0: "batch"}}


@contextlib.contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Export Hugging Face attention as plain ops: ORT's fusion recognises them, not SDPA."""
    encoder = getattr(getattr(model, "net", None), "encoder", None)
    config = getattr(encoder, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if config is None or before is None:
        yield
        return
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence warnings ORT's Python tools log for expected cases (fused graphs, no pre-processing)."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _fuse_transformer(model: nn.Module, path: Path) -> None:
    """Fuse attention, skip-layer-norm, embeddings and GELU with ORT's transformer optimizer, in place."""
    from onnxruntime.transformers.optimizer import optimize_model

    from lepton_ai.compress.prune import attention_heads

    # after head pruning: fewer heads than the config says
    heads, width = attention_heads(model)
    with quiet_logging():
        fused = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=width, opt_level=1)
    tmp = path.with_name(f".{path.name}.fused")
    fused.save_model_to_file(str(tmp))
    os.replace(tmp, path)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: torch.Tensor | None = None,
    opset: int = 17,
    fuse: bool = True,
) -> Path:
    """Export `model` (batch dimension dynamic) to the ONNX file `path`, atomically; return the path.
    Transformer encoders get their attention, layer norms and GELU fused unless `fuse=False`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module, args, names, axes = (
        _example(model)
        if example is None
        else (model, (example,), ["input"], {"input": {0: "batch"}, "logits": {0: "batch"}})
    )
    module = module.eval().cpu()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), _eager_attention(model), warnings.catch_warnings():
            # tracer warnings about shapes that are dynamic on purpose
            warnings.simplefilter("ignore")
            # TorchScript-based exporter: fast, and produces graphs ORT fuses and quantizes well.
            torch.onnx.export(
                module,
                args,
                tmp,
                input_names=names,
                output_names=list(axes)[len(names) :],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        if fuse and getattr(model, "is_text", False):
            _fuse_transformer(model, Path(tmp))
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
        # Always set: left to itself ONNX Runtime starts a thread per physical core of the host and pins
        # one to each, outside the CPUs this process may use and over a container's CPU quota.
        opts.intra_op_num_threads = threads or cpu_info()["cores"]
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizer

    def __call__(self, x: Any) -> torch.Tensor:
        """Return logits for a tensor batch, token tensors, or a list of strings (with a tokenizer)."""
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
            x = self.tokenize(list(x))
        if isinstance(x, dict) or hasattr(x, "keys"):
            feeds = {
                n: np.asarray(x[n].cpu().numpy() if isinstance(x[n], torch.Tensor) else x[n], dtype=np.int64)
                for n in self.input_names
            }
        else:
            arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            feeds = {self.input_names[0]: arr.astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Return `texts` as token tensors padded to the longest (at most 128 tokens)."""
        if self.tokenizer is None:
            raise InvalidInputError("this ONNX model needs a tokenizer to take strings")
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt"))

    def predict(self, x: Any) -> torch.Tensor:
        """Return the predicted class id of each input."""
        return self(x).argmax(-1)
