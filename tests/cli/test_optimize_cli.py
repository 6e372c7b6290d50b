from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


def lepton(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args], capture_output=True, text=True
    )


def test_optimize_registers_the_best_with_parent_recipe_and_report(tmp_path: Path) -> None:
    r = lepton("train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--name", "dm", "--json")
    assert r.returncode == 0, r.stderr
    r = lepton(
        *"optimize dm --data digits --techniques onnx,int8 --report".split(),
        str(tmp_path / "rep"),
        "--max-accuracy-drop",
        "0.02",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ref"] == "dm:2" and doc["parent"] == "dm:1"
    assert doc["speedup"] >= 1.0 and doc["accuracy_drop"] <= 0.02
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["best"]["name"] == doc["best"]["name"] and len(report["trials"]) >= 4
    shown = json.loads(lepton("models", "show", "dm:2", "--json").stdout)
    assert shown["parent"] == "dm:1" and shown["recipe"]["candidate"] == doc["best"]["name"]
    assert shown["metrics"]["accuracy"] == doc["best"]["accuracy"]
    run = json.loads(lepton("runs", "show", str(doc["run_id"]), "--json").stdout)
    assert run["status"] == "completed" and run["kind"] == "optimize"


@pytest.mark.parametrize(
    "args, message",
    [
        (["nothing-here", "--data", "digits"], "no model 'nothing-here'"),
        (["cnn-small", "--data", "digits"], "untrained architecture"),
        (["minilm", "--data", "digits"], "embedding model"),
        (["minilm", "--data", "python-docs", "--max-accuracy-drop", "0.01"], "max_fidelity_drop"),
        (
            ["minilm", "--data", "python-docs", "--max-fidelity-drop", "2"],
            "max_fidelity_drop must be in [0, 1)",
        ),
        (["minilm", "--data", "python-docs", "--objective", "cost"], "objective"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    r = lepton("optimize", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and message in r.stderr and "Traceback" not in r.stderr


def test_data_that_does_not_match_the_model() -> None:
    assert (
        lepton(
            "train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--name", "d", "--json"
        ).returncode
        == 0
    )
    r = lepton("optimize", "d", "--data", "iris")
    assert r.returncode == 2 and "classes" in r.stderr
