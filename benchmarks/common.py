"""What the benchmarks share: the digits model they start from, and writing their JSON atomically."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any


def write_json(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write `doc` to `path` (temp file + rename); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)
    return path


def train_digits_cnn(epochs: int = 10) -> tuple[Any, dict[str, Any], tuple[Any, Any, Any]]:
    """Train cnn-small on digits as `lepton train` does (seed 0, CPU); return the model, its history and
    the (train, val, test) splits."""
    import torch

    from lepton_ai import LeptonModel
    from lepton_ai.data import load

    torch.manual_seed(0)
    splits = tuple(load("digits", s) for s in ("train", "val", "test"))
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        # randomly initialised on purpose
        warnings.simplefilter("ignore")
        model.load_pretrained_model("cnn-small")
    history = model.fit(
        splits[0], splits[1], epochs=epochs, lr=3e-3, batch_size=64, device="cpu", progress=False
    )
    return model, history, splits


# what a CPU that has AVX2 and nothing wider lacks (the names /proc/cpuinfo gives them)
_BEYOND_AVX2 = ("avx512", "avx_vnni", "amx")


def as_avx2_only(info: dict[str, Any]) -> dict[str, Any]:
    """Run this benchmark again in a process that sees its CPU as AVX2-only (no AVX-512, AVX-VNNI or AMX),
    unless this is that process; return `info` with the hidden flags left out and the view named.

    benchmarks/avx2only.c (built here with gcc) makes CPUID fault and answers with those features cleared,
    so that PyTorch, oneDNN, MKL, NumPy and ONNX Runtime pick their AVX2 kernels. It needs a CPU and kernel
    that support CPUID faulting (`cpuid_fault` in /proc/cpuinfo). Caches, clocks and memory stay this
    machine's: it is the kernels an AVX2-only CPU runs, not that CPU."""
    import subprocess
    import sys
    import tempfile

    if os.environ.get("LEPTON_AVX2_ONLY") != "1":
        if "cpuid_fault" not in Path("/proc/cpuinfo").read_text():
            raise SystemExit("--avx2-only needs CPUID faulting, which this CPU or kernel lacks")
        source = Path(__file__).with_name("avx2only.c")
        fd, built = tempfile.mkstemp(suffix=".so")
        os.close(fd)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", built, str(source), "-ldl"], check=True)
        shim = Path(tempfile.gettempdir()) / f"lepton-avx2only-{os.getuid()}.so"
        os.replace(built, shim)
        env = {**os.environ, "LD_PRELOAD": str(shim), "LEPTON_AVX2_ONLY": "1"}
        # a library that reads a variable rather than CPUID is told too
        env.update(ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    import torch

    seen = torch.backends.cpu.get_cpu_capability()
    if seen != "AVX2":
        raise SystemExit(f"the AVX2-only view did not take: PyTorch sees {seen}")
    cpu = info["cpu"]
    flags = [f for f in cpu["flags"] if not f.startswith(_BEYOND_AVX2)]
    return {**info, "cpu": {**cpu, "flags": flags, "view": "AVX2 only (benchmarks/avx2only.c masks CPUID)"}}


def full_length_speedup(model: Any, best: Any, texts: list[str], batch_size: int = 32) -> dict[str, float]:
    """Return `best`'s throughput against `model`'s (median and quartiles, measured interleaved) on batches
    of sentences run together to 128 tokens each, no padding: what is left of a speedup where inputs are
    never shorter than the maximum."""
    from lepton_ai.compress.settle import settle

    joined = [" ".join(texts[i : i + 8]) for i in range(0, 8 * batch_size, 8)]
    tokens = model.net.tokenizer(joined, truncation=True, max_length=128, padding=True, return_tensors="pt")
    if int(tokens["attention_mask"].sum(1).min()) < 128:
        raise ValueError("the joined sentences are shorter than 128 tokens: give longer texts")
    settled = settle({"baseline": model, "best": best}, dict(tokens.data), batch_size, budget_s=20)
    return settled.throughput["best"].to_dict()
