"""Where and in what precision a model computes: the device ("auto" is CUDA when present) and the
training precision ("auto" is bf16 AMP on CUDA, fp32 on CPU)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lepton_ai.errors import InvalidInputError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "device='cuda' asked for but no CUDA GPU is visible; use device='cpu' or 'auto'"
        )
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return fp32, bf16 or fp16: "auto" is bf16 AMP on CUDA (fp16 where bf16 is missing), fp32 on CPU."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise InvalidInputError("fp16 training needs a CUDA GPU; on CPU use fp32 or bf16")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """Return the autocast context for `precision` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on `n` PyTorch intra-op threads, then restore the number before."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
