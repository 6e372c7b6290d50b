"""Compression and acceleration. Today: ONNX export, ONNX Runtime inference, int8
quantization (dynamic and static), structured and magnitude pruning, distillation, and the
accuracy-aware search `optimize` for tensor models. Transformer pruning and the accuracy-aware search
(`optimize`) are the rest of issue 4."""

from lepton_ai.compress.distill import distill, distillation_loss
from lepton_ai.compress.measure import measure, size_bytes
from lepton_ai.compress.onnx import OnnxModel, export_onnx
from lepton_ai.compress.optimize import OptimizeResult, Trial, optimize
from lepton_ai.compress.prune import count_parameters, prune_magnitude, prune_structured, sparsity
from lepton_ai.compress.quantize import quantize_onnx

__all__ = ["OnnxModel", "count_parameters", "distill", "distillation_loss", "export_onnx", "measure", "optimize", "OptimizeResult", "prune_magnitude", "prune_structured",
           "quantize_onnx", "size_bytes", "sparsity", "Trial"]
