"""Optimized models on disk: a directory the registry stores, holding lepton.json (the model's
metadata, its runtime and the recipe that made it) and either an ONNX file or safetensors
weights (int8-stored where the recipe says so). PyTorch recipes (int8, bf16, compile) are re-applied on load,
so nothing is pickled."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lepton_ai.compress.lengths import ByLength
from lepton_ai.compress.onnx import OnnxModel
from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import cpu_info
from lepton_ai.models.weights import pack_int8, store_int8, unpack_int8

_ONNX_FILE = "model.onnx"
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
# methods of a text model that explanations and tokenizing call on what they are given
_PASSED = ("tokenize", "_text_net")


class OnDevice(nn.Module):
    """A module computing on a device (a GPU, the CPU) in a precision (bf16, fp16, fp32) that takes and
    answers float32 on the CPU as the model it came from did; `path` names the file its weights are stored
    in, if any (its size is theirs)."""

    def __init__(
        self,
        module: nn.Module,
        dtype: torch.dtype,
        device: torch.device | None = None,
        path: Path | None = None,
    ) -> None:
        super().__init__()
        self.module, self.dtype, self.path = module.to(device or "cpu", dtype), dtype, path

    def __getattr__(self, name: str) -> Any:
        # what the model it came from tells (is_text, num_classes) and its text tools; not its other methods,
        # which would take float32 past the cast
        try:
            return super().__getattr__(name)
        except AttributeError:
            value = getattr(self._modules["module"], name)
            if callable(value) and name not in _PASSED:
                raise AttributeError(f"{name}: call the {self.dtype} model itself") from None
            return value

    def forward(self, x: Any) -> torch.Tensor:
        # where the module is now: a server may have moved it since
        weight = next(self.module.parameters(), None)
        device = weight.device if weight is not None else torch.device("cpu")
        if isinstance(x, dict):
            x = {k: v.to(device) for k, v in x.items()}
        elif isinstance(x, torch.Tensor):
            x = x.to(device, self.dtype if x.is_floating_point() else x.dtype)
        return self.module(x).float().cpu()


def computes_bf16() -> bool:
    """Return whether this CPU computes in bf16 (AVX-512 BF16, AMX): elsewhere bf16 is converted to and fro
    and only slower than fp32."""
    # PyTorch reads CPUID itself: it also sees what a process was told its CPU lacks
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe()) if probe else bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["flags"]))


def int8_stored(model: nn.Module, dtype: torch.dtype, path: Path) -> OnDevice:
    """Return `model` computing in `dtype` from its weights stored in int8 in the file `path` (written here),
    as `save_runnable` stores and `load_runnable` loads it."""
    save_file(pack_int8({k: v.contiguous() for k, v in model.state_dict().items()}), str(path))
    twin = copy.deepcopy(model)
    twin.load_state_dict(unpack_int8(load_file(str(path))))
    return OnDevice(twin.eval(), dtype, path=path)


def save_runnable(runnable: Any, source: Any, recipe: dict[str, Any], directory: str | Path) -> Path:
    """Write `runnable` (an OnnxModel, or a PyTorch form of the LeptonModel `source`) into `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # how it batches is in the recipe, applied again on loading
    if isinstance(runnable, ByLength):
        runnable = runnable.runnable
    if not isinstance(runnable, OnnxModel):
        source.save_dir(out, extra={"runtime": "pytorch", "recipe": recipe})
        # (a LoRA model saves its adapter alone, naming its base's weights)
        if recipe.get("weights") == "int8" and (out / "model.safetensors").exists():
            store_int8(out / "model.safetensors")
        return out
    shutil.copyfile(runnable.path, out / _ONNX_FILE)
    meta = {**source.metadata(), "runtime": "onnxruntime", "recipe": recipe}
    (out / "lepton.json").write_text(json.dumps(meta, indent=2))
    if source.is_text:
        source.net.tokenizer.save_pretrained(str(out / "encoder"))
    return out


def load_runnable(ref: str | Path, threads: int | None = None) -> Any:
    """Return a callable model for a registry reference or saved directory: an ONNX Runtime
    session (with `threads` compute threads, default all cores), or a LeptonModel with its
    recipe (int8, bf16, compile) applied again; text run by length where the recipe says so."""
    from lepton_ai.store import local_path

    path = local_path(ref)
    meta_file = path / "lepton.json"
    if not meta_file.exists():
        raise InvalidInputError(f"{ref} is not a saved Lepton model (no lepton.json)")
    meta = json.loads(meta_file.read_text())
    runnable = _runnable(path, meta, threads)
    return ByLength(runnable) if (meta.get("recipe") or {}).get("batching") == "by-length" else runnable


def _runnable(path: Path, meta: dict[str, Any], threads: int | None) -> Any:
    from lepton_ai.models import LeptonModel

    recipe = meta.get("recipe") or {}
    if meta.get("runtime") == "onnxruntime":
        tokenizer = None
        if (path / "encoder").is_dir():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path / "encoder"), local_files_only=True)
        return OnnxModel(path / _ONNX_FILE, threads=threads, tokenizer=tokenizer)
    model = LeptonModel.load(path)
    if recipe.get("precision") == "int8":
        from lepton_ai.compress.quantize import quantize_torch

        return quantize_torch(model)
    # found fastest on a GPU, or on a CPU that computes in bf16: applied again only where it would be again
    gpu = recipe.get("device") == "cuda" and torch.cuda.is_available()
    if recipe.get("precision") in _HALF and (gpu or computes_bf16()):
        return OnDevice(model, _HALF[recipe["precision"]])
    return torch.compile(model) if recipe.get("compile") else model
