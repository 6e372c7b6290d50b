from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from lepton_ai import LeptonModel  # noqa: E402
from lepton_ai.compress import OnnxModel, export_onnx, quantize, size_bytes  # noqa: E402
from lepton_ai.compress.quantize import quantizable_nodes  # noqa: E402
from lepton_ai.data import load  # noqa: E402
from lepton_ai.errors import InvalidInputError  # noqa: E402


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_one_interface_two_backends(trained: LeptonModel, tmp_path: Path, backend: str) -> None:
    test = load("digits", "test")
    q = quantize(trained, "dynamic", backend, path=tmp_path / "q.onnx")
    assert isinstance(q, OnnxModel) == (backend == "onnxruntime")
    base = float((trained.predict(test) == test.labels).float().mean())
    with torch.inference_mode():
        acc = float((q(test.features).argmax(-1) == test.labels).float().mean())
    assert base - acc <= 0.01
    # int8 weights
    assert size_bytes(q) < size_bytes(trained) / 3
    # the original is left as it was
    assert sum(p.numel() for p in trained.parameters()) > 0
    with pytest.raises(InvalidInputError, match="static"):
        quantize(trained, "static", "pytorch")
    with pytest.raises(InvalidInputError, match="backend"):
        quantize(trained, "dynamic", "tensorrt")  # type: ignore[arg-type]


def test_transformer_int8_covers_fused_attention_and_embeddings(tiny_bert, tmp_path: Path) -> None:
    import onnx

    from tests.compress.conftest import embedder

    model = embedder(tiny_bert)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    ops = {n.op_type for n in onnx.load(str(fp32)).graph.node}
    # fused for ORT's transformer kernels
    assert {"Attention", "SkipLayerNormalization"} <= ops
    groups = quantizable_nodes(fp32)
    # embeddings, then one per layer
    assert len(groups) == 3 and any("Attention" in n for n in groups[1])
    q = quantize(fp32, path=tmp_path / "int8.onnx")
    q.tokenizer = model.net.tokenizer
    # the embedding table too
    assert q.path.stat().st_size < fp32.stat().st_size / 3
    sentences = ["int8 keeps the direction of an embedding", "mostly"]
    cosine = torch.nn.functional.cosine_similarity(q(sentences), model.embed(sentences))
    assert cosine.min() > 0.9


def test_int8_weights_shrink_the_file_and_fold_back_to_fp32(
    digits_model: LeptonModel, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    fp32 = export_onnx(digits_model, tmp_path / "fp32.onnx")
    q = quantize(fp32, "weights", path=tmp_path / "w8.onnx")
    graph = onnx.load(str(q.path)).graph
    kinds = {i.name: i.data_type for i in graph.initializer}
    # every conv and the head stored in int8, restored by plain ops (no int8 kernels to run)
    assert sum(t == onnx.TensorProto.INT8 for t in kinds.values()) == 5
    assert {n.op_type for n in graph.node} >= {"Cast", "Mul"}
    assert not {"DequantizeLinear", "QLinearConv"} & {n.op_type for n in graph.node}
    assert q.path.stat().st_size < fp32.stat().st_size / 3.5
    test = load("digits", "test")
    with torch.inference_mode():
        out, ref = q(test.features), OnnxModel(fp32)(test.features)
    # per-channel int8 weights move logits by well under a percent of their range
    assert (out - ref).abs().max() < 0.01 * ref.abs().max()
    assert (out.argmax(-1) != ref.argmax(-1)).float().mean() <= 0.01
    # the runtime folds the int8 weights back into fp32 constants when it loads the graph
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(q.path), opts, providers=["CPUExecutionProvider"])
    assert not {"Cast", "Mul"} & {n.op_type for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node}


def test_bf16_from_int8_weights_saves_and_loads_as_measured(
    digits_model: LeptonModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lepton_ai.compress import load_runnable, save_runnable
    from lepton_ai.compress.artifact import OnDevice, int8_stored
    from lepton_ai.models.weights import is_int8_stored

    runnable = int8_stored(digits_model, torch.bfloat16, tmp_path / "w.safetensors")
    assert runnable.path is not None and size_bytes(runnable) < size_bytes(digits_model) / 3.5
    test = load("digits", "test")
    with torch.inference_mode():
        out, ref = runnable(test.features), digits_model(test.features)
    # float32 in and out; bf16 inside
    assert out.dtype == torch.float32 and next(runnable.module.parameters()).dtype == torch.bfloat16
    assert (out.argmax(-1) != ref.argmax(-1)).float().mean() <= 0.01
    recipe = {"runtime": "pytorch", "precision": "bf16", "weights": "int8"}
    folder = save_runnable(runnable, digits_model, recipe, tmp_path / "saved")
    assert is_int8_stored(folder / "model.safetensors")
    again = load_runnable(folder)
    assert isinstance(again, OnDevice) and again.dtype == torch.bfloat16
    with torch.inference_mode():
        assert torch.equal(again(test.features), out)
    # what the model tells, through the wrapper; not its methods, which would skip the cast to bf16
    assert again.num_classes == 10
    with pytest.raises(AttributeError, match="predict"):
        again.predict(test.features)
    # on a CPU that does not compute in bf16 the same artifact loads in fp32 (bf16 would only be slower)
    monkeypatch.setattr("lepton_ai.compress.artifact.computes_bf16", lambda: False)
    plain = load_runnable(folder)
    assert isinstance(plain, LeptonModel) and next(plain.parameters()).dtype == torch.float32
    with torch.inference_mode():
        assert (plain(test.features).argmax(-1) != out.argmax(-1)).float().mean() <= 0.01
