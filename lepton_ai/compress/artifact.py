"""Optimized models on disk: a directory the registry stores, holding lepton.json (the model's
metadata, its runtime and the recipe that made it) and either an ONNX file or safetensors
weights. PyTorch recipes (int8, compile) are re-applied on load, so nothing is pickled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from lepton_ai.compress.onnx import OnnxModel
from lepton_ai.errors import InvalidInputError

_ONNX_FILE = "model.onnx"


def save_runnable(runnable: Any, source: Any, recipe: dict[str, Any], directory: str | Path) -> Path:
    """Write `runnable` (an OnnxModel, or a PyTorch form of the LeptonModel `source`) into `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(runnable, OnnxModel):
        return source.save_dir(out, extra={"runtime": "pytorch", "recipe": recipe})
    shutil.copyfile(runnable.path, out / _ONNX_FILE)
    meta = {**source.metadata(), "runtime": "onnxruntime", "recipe": recipe}
    (out / "lepton.json").write_text(json.dumps(meta, indent=2))
    if source.is_text:
        source.net.tokenizer.save_pretrained(str(out / "encoder"))
    return out


def load_runnable(ref: str | Path, threads: int | None = None) -> Any:
    """Return a callable model for a registry reference or saved directory: an ONNX Runtime
    session (with `threads` compute threads, default all cores), or a LeptonModel with its
    recipe (int8, compile) applied again."""
    from lepton_ai.models import LeptonModel
    from lepton_ai.store import local_path

    path = local_path(ref)
    meta_file = path / "lepton.json"
    if not meta_file.exists():
        raise InvalidInputError(f"{ref} is not a saved Lepton model (no lepton.json)")
    meta = json.loads(meta_file.read_text())
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
    return torch.compile(model) if recipe.get("compile") else model
