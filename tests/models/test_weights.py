from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from lepton_ai.models.weights import is_int8_stored, pack_int8, store_int8, unpack_int8


def test_int8_stored_weights_come_back_within_half_a_step() -> None:
    torch.manual_seed(0)
    state = {
        "fc.weight": torch.randn(16, 32),
        "conv.weight": torch.randn(8, 3, 3, 3) * torch.arange(1, 9).view(-1, 1, 1, 1),
        "fc.bias": torch.randn(16),
        "steps": torch.tensor(3),
        # a buffer (an input's spread, tiny where a pixel never varies) and a parameter named like a scale
        "normalize.std": torch.tensor([[1e-6, 4.7], [2.6e-4, 3.0]]),
        "gate.scale": torch.randn(4, 4),
    }
    packed = pack_int8(state)
    # matrices and kernels in int8 with a scale per output row; vectors and integers as they were
    assert packed["fc.weight.int8"].dtype == torch.int8 and packed["fc.weight.scale"].shape == (16,)
    assert packed["conv.weight.scale"].shape == (8,) and "fc.weight" not in packed
    for kept in ("fc.bias", "steps", "normalize.std", "gate.scale"):
        assert torch.equal(packed[kept], state[kept]), kept
    back = unpack_int8(packed)
    assert set(back) == set(state) and torch.equal(back["normalize.std"], state["normalize.std"])
    for name in ("fc.weight", "conv.weight"):
        step = state[name].abs().flatten(1).amax(1) / 127
        error = (back[name] - state[name]).abs().flatten(1).amax(1)
        assert torch.all(error <= step / 2 + 1e-6), name


def test_store_int8_rewrites_a_file_in_place_with_its_metadata(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = tmp_path / "model.safetensors"
    save_file(
        {"fc.weight": torch.randn(256, 256), "fc.bias": torch.zeros(256)},
        str(path),
        metadata={"lepton": "{}"},
    )
    before = path.stat().st_size
    assert not is_int8_stored(path)
    store_int8(path)
    assert is_int8_stored(path) and path.stat().st_size < before / 3.5
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"lepton": "{}"}
    assert not list(tmp_path.glob(".*"))
