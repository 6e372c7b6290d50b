"""Compression and acceleration: structured and magnitude pruning (convnets, MLPs, transformer
heads and FFN neurons), int8 quantization through ONNX Runtime or PyTorch, distillation, ONNX
export with graph fusion, and `optimize`, the measured, quality-aware search over all of them."""

from lepton_ai.compress.artifact import load_runnable, save_runnable
from lepton_ai.compress.distill import distill, distillation_loss, embedding_distillation_loss
from lepton_ai.compress.measure import measure, size_bytes
from lepton_ai.compress.onnx import OnnxModel, export_onnx
from lepton_ai.compress.optimize import TECHNIQUES, optimize
from lepton_ai.compress.prune import count_parameters, prune, prune_magnitude, prune_structured, sparsity
from lepton_ai.compress.quantize import quantize, quantize_onnx, quantize_torch
from lepton_ai.compress.trial import OptimizeResult, Trial

__all__ = [
    "OnnxModel",
    "OptimizeResult",
    "TECHNIQUES",
    "Trial",
    "count_parameters",
    "distill",
    "distillation_loss",
    "embedding_distillation_loss",
    "export_onnx",
    "load_runnable",
    "measure",
    "optimize",
    "prune",
    "prune_magnitude",
    "prune_structured",
    "quantize",
    "quantize_onnx",
    "quantize_torch",
    "save_runnable",
    "size_bytes",
    "sparsity",
]
