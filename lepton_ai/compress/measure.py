"""Speed and size of a runnable model, measured on this machine the same way for every
candidate: latency at batch 1 (p50, p99) and throughput at a given batch size."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def size_bytes(model: Any) -> int:
    """Return the bytes a model takes on disk (ONNX file) or in its serialised state (PyTorch,
    so int8 packed weights count at their real size)."""
    path = getattr(model, "path", None)
    if isinstance(path, Path) and path.exists():
        return path.stat().st_size
    # a wrapper that runs a module elsewhere
    module = getattr(model, "model", model)
    if isinstance(module, torch.nn.Module):
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        return buffer.tell()
    raise TypeError(f"cannot size a {type(model).__name__}")


def take(inputs: Any, n: int) -> Any:
    """Return the first `n` examples of a tensor, a list or a dict of token tensors, repeated if short."""
    if isinstance(inputs, dict):
        return {k: take(v, n) for k, v in inputs.items()}
    batch = inputs[:n]
    if len(batch) < n:
        reps = -(-n // max(1, len(batch)))
        batch = torch.cat([batch] * reps)[:n] if isinstance(batch, torch.Tensor) else (list(batch) * reps)[:n]
    return batch


def timed(fn: Callable[[], Any], repeats: int, min_seconds: float) -> list[float]:
    """Return the seconds of each call of `fn`: at least `repeats` calls and `min_seconds`, at most 20 ×
    `repeats` calls."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 20 * repeats:
            break
    return times


@torch.inference_mode()
def measure(
    model: Callable[[Any], Any],
    inputs: Any,
    batch_size: int = 64,
    repeats: int = 20,
    min_seconds: float = 1.0,
    warmup: int = 3,
) -> dict[str, float]:
    """Return latency_ms_p50/p99 at batch 1 and throughput_per_s at `batch_size` for `model(x)`."""
    one, batch = take(inputs, 1), take(inputs, batch_size)
    for _ in range(warmup):
        model(one)
        model(batch)
    lat = np.array(timed(lambda: model(one), repeats, min_seconds / 2)) * 1e3
    thr = timed(lambda: model(batch), max(3, repeats // 4), min_seconds / 2)
    return {
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "throughput_per_s": batch_size / float(np.median(thr)),
        "batch_size": batch_size,
    }
