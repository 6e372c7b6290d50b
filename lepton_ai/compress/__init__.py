"""Compression and acceleration. Today: ONNX export, ONNX Runtime inference and int8
quantization (dynamic and static). Pruning, distillation and the accuracy-aware search
(`optimize`) are the rest of issue 4."""

from lepton_ai.compress.measure import measure, size_bytes
from lepton_ai.compress.onnx import OnnxModel, export_onnx
from lepton_ai.compress.quantize import quantize_onnx

__all__ = ["OnnxModel", "export_onnx", "measure", "quantize_onnx", "size_bytes"]
