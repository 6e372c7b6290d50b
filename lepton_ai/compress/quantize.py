"""int8 quantization behind one interface, `quantize`: through ONNX Runtime (dynamic for
linears and transformers, static with calibration for convnets, per-channel weights; or the
weights alone, stored in int8 and computed in fp32) and through PyTorch (dynamic int8 linears
and embeddings, a stored recipe re-applied on load)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lepton_ai.errors import InvalidInputError
from lepton_ai.models.weights import int8_rows

# Fused transformer ops and embedding tables too: the embeddings are half of a small encoder.
_DYNAMIC_OPS = ["MatMul", "Gemm", "Conv", "Attention", "Gather", "EmbedLayerNormalization"]
Method = Literal["dynamic", "static", "weights"]


def _preprocess(src: Path, dst: Path) -> None:
    """Shape inference and graph clean-up before quantization, as ORT recommends; graphs with
    fused ORT ops (transformers after export_onnx) are taken as they are: symbolic shape
    inference does not know those ops, and DefaultTensorType covers their outputs."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if any(n.domain == "com.microsoft" for n in onnx.load(str(src), load_external_data=False).graph.node):
        shutil.copyfile(src, dst)
    else:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    method: Method = "dynamic",
    calib: Iterable[np.ndarray] | None = None,
    per_channel: bool = True,
    exclude: list[str] | None = None,
) -> Path:
    """Write an int8 copy of the ONNX model `src` to `dst`; static needs `calib` input batches,
    "weights" stores the weights alone in int8 (see `_int8_weights`)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from lepton_ai.compress.onnx import quiet_logging

    src, dst = Path(src), Path(dst)
    if method not in ("dynamic", "static", "weights"):
        raise InvalidInputError(f"quantization method must be dynamic, static or weights, not {method!r}")
    with tempfile.TemporaryDirectory() as tmp, quiet_logging():
        pre = Path(tmp) / "pre.onnx"
        out = Path(tmp) / "int8.onnx"
        if method == "weights":
            _int8_weights(src, out, exclude or [])
        else:
            _preprocess(src, pre)
        if method == "dynamic":
            quantize_dynamic(
                str(pre),
                str(out),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                nodes_to_exclude=exclude or [],
                op_types_to_quantize=_DYNAMIC_OPS,
                # FLOAT, for fused ops shape inference skips
                extra_options={"DefaultTensorType": 1},
            )
        elif method == "static":
            if calib is None:
                raise InvalidInputError("static quantization needs calibration data (calib=...)")
            import onnxruntime as ort

            name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name

            rows = iter(calib)

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.batches = rows

                def get_next(self) -> dict[str, np.ndarray] | None:
                    batch = next(self.batches, None)
                    return None if batch is None else {name: np.asarray(batch, dtype=np.float32)}

            quantize_static(
                str(pre),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                nodes_to_exclude=exclude or [],
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(suffix=".onnx", dir=dst.parent)
        os.close(fd)
        os.replace(out, part)
        os.replace(part, dst)
    return dst


def _int8_weights(src: Path, dst: Path, exclude: list[str]) -> None:
    """Store each Conv, Gemm and MatMul weight as int8 with one fp32 scale per output channel
    (symmetric), restored by Cast and Mul: plain ops any runtime folds into fp32 constants when it
    loads the graph, so the file shrinks about 4x and the model runs exactly as fast as in fp32.
    (ORT keeps DequantizeLinear unfolded for its int8 kernels: a graph of those runs 6x slower.)"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    restore: list[onnx.NodeProto] = []
    for node in graph.node:
        name = node.input[1] if len(node.input) > 1 else ""
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.name in exclude or name in inputs:
            continue
        init = inits.pop(name, None)
        if init is None or len(init.dims) < 2 or init.data_type != TensorProto.FLOAT:
            continue
        weight = torch.tensor(numpy_helper.to_array(init))
        # the output channel: rows of a Conv's and a transposed Gemm's weight, columns of a MatMul's
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        axis = 0 if node.op_type == "Conv" or transposed else weight.dim() - 1
        q, scale = int8_rows(weight.movedim(axis, 0))
        # the scales shaped to multiply the int8 weight along its output channel
        shape = [len(scale) if d == axis else 1 for d in range(weight.dim())]
        graph.initializer.remove(init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(q.movedim(0, axis).contiguous().numpy(), f"{name}.int8"),
                numpy_helper.from_array(scale.view(shape).numpy(), f"{name}.scale"),
            ]
        )
        restore += [
            helper.make_node("Cast", [f"{name}.int8"], [f"{name}.fp32"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{name}.fp32", f"{name}.scale"], [name]),
        ]
    for i, node in enumerate(restore):
        graph.node.insert(i, node)
    onnx.save(model, str(dst))


def quantizable_nodes(path: str | Path) -> list[list[str]]:
    """Return the names of the nodes int8 can apply to, grouped in graph order: one group per
    transformer layer (starting at its attention), or one per node in other graphs."""
    import onnx

    nodes = [
        n for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in _DYNAMIC_OPS
    ]
    layered = any(n.op_type == "Attention" for n in nodes)
    groups: list[list[str]] = []
    for n in nodes:
        if not groups or not layered or n.op_type == "Attention":
            groups.append([])
        groups[-1].append(n.name)
    return groups


def quantize_torch(model: nn.Module) -> nn.Module:
    """Return a copy of `model` with int8 dynamic linears (per-channel) and int8 embedding tables."""
    import copy
    import warnings

    from torch.ao.quantization import (
        float_qparams_weight_only_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    with warnings.catch_warnings():
        # torch.ao's deprecation notice: this path is one backend of several
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            copy.deepcopy(model).eval().cpu(),
            {nn.Linear: per_channel_dynamic_qconfig, nn.Embedding: float_qparams_weight_only_qconfig},
        )


def quantize(
    model: nn.Module | str | Path,
    method: Method = "dynamic",
    backend: Literal["onnxruntime", "pytorch"] = "onnxruntime",
    *,
    calib: Iterable[np.ndarray] | None = None,
    path: str | Path | None = None,
    exclude: list[str] | None = None,
) -> Any:
    """Return an int8 runnable of `model` (a module or an ONNX file): an `OnnxModel` written to
    `path` for onnxruntime, or a quantized module for pytorch (dynamic only)."""
    from lepton_ai.compress.onnx import OnnxModel, export_onnx

    if backend == "pytorch":
        if method != "dynamic" or not isinstance(model, nn.Module):
            raise InvalidInputError(
                "the pytorch backend quantizes modules dynamically; use onnxruntime for static"
            )
        return quantize_torch(model)
    if backend != "onnxruntime":
        raise InvalidInputError(f"backend must be onnxruntime or pytorch, not {backend!r}")
    with tempfile.TemporaryDirectory() as tmp:
        src = export_onnx(model, Path(tmp) / "fp32.onnx") if isinstance(model, nn.Module) else Path(model)
        dst = Path(path) if path else Path(tempfile.mkdtemp(prefix="lepton-int8-")) / f"int8-{method}.onnx"
        quantize_onnx(src, dst, method, calib=calib, exclude=exclude)
    tokenizer = getattr(getattr(model, "net", None), "tokenizer", None)
    return OnnxModel(dst, tokenizer=tokenizer)
