"""int8 quantization through ONNX Runtime: dynamic (linears, transformers) and static with
calibration (convnets), per-channel weights. Our own interface; not torch.ao's eager mode."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from lepton_ai.errors import InvalidInputError


def _preprocess(src: Path, dst: Path) -> None:
    """Shape inference and graph clean-up before quantization, as ORT recommends."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


def quantize_onnx(src: str | Path, dst: str | Path, method: Literal["dynamic", "static"] = "dynamic",
                  calib: Iterable[np.ndarray] | None = None, per_channel: bool = True,
                  exclude: list[str] | None = None) -> Path:
    """Write an int8 copy of the ONNX model `src` to `dst`; static needs `calib` input batches."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    src, dst = Path(src), Path(dst)
    if method not in ("dynamic", "static"):
        raise InvalidInputError(f"quantization method must be dynamic or static, not {method!r}")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        _preprocess(src, pre)
        out = Path(tmp) / "int8.onnx"
        if method == "dynamic":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                             nodes_to_exclude=exclude or [])
        else:
            if calib is None:
                raise InvalidInputError("static quantization needs calibration data (calib=...)")
            import onnxruntime as ort

            name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.batches = iter(calib)

                def get_next(self):  # type: ignore[no-untyped-def]
                    batch = next(self.batches, None)
                    return None if batch is None else {name: np.asarray(batch, dtype=np.float32)}

            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            nodes_to_exclude=exclude or [])
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(suffix=".onnx", dir=dst.parent)
        os.close(fd)
        os.replace(out, part)
        os.replace(part, dst)
    return dst
