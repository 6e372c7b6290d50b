"""`lepton pretrain` then `lepton train --init`: a backbone pretrained on digits without labels, registered
with its recipe, then a head on 5 % of the labels; and bad input as one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def lepton(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args], capture_output=True, text=True
    )


def test_pretrain_then_a_head_on_five_percent_of_the_labels() -> None:
    r = lepton(
        "pretrain", "--model", "cnn-small", "--data", "digits", "--name", "ssl", "--epochs", "4", "--json"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["method"] == "vicreg" and len(doc["epochs"]) == 4 and doc["epochs"][-1]["knn_accuracy"] > 0.8
    shown = json.loads(lepton("models", "show", "ssl:1", "--json").stdout)
    pretraining = shown["recipe"]["pretraining"]
    assert (pretraining["method"], pretraining["epochs"]) == ("vicreg", 4)
    assert pretraining["views"]["images"]["flip"] is False
    run = json.loads(lepton("runs", "show", str(doc["run_id"]), "--json").stdout)
    assert len(run["history"]["knn_accuracy"]) == 4 and len(run["history"]["effective_rank"]) == 4
    r = lepton(
        "train",
        "--init",
        "ssl",
        "--data",
        "digits",
        "--name",
        "probe",
        "--label-fraction",
        "0.05",
        "--head-only",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    trained = json.loads(r.stdout)
    # chance is 0.1; 4 epochs and 60 labels (benchmarks/ssl.py measures 100 epochs against supervised)
    assert trained["method"] == "head-only" and trained["metrics"]["accuracy"] > 0.5
    params = json.loads(lepton("runs", "show", str(trained["run_id"]), "--json").stdout)["params"]
    assert params["label_fraction"] == 0.05 and params["model"] == "ssl"


def test_bad_pretraining_input_is_one_line() -> None:
    cases = [
        (("--model", "cnn-small", "--data", "digits", "--batch-size", "1"), "at least 2 examples"),
        (("--model", "cnn-small", "--data", "wine"), "needs image inputs"),
        (("--model", "cnn-small", "--data", "digits", "--method", "byol"), "unknown method"),
    ]
    for args, says in cases:
        r = lepton("pretrain", *args, "--name", "x")
        assert r.returncode == 2 and r.stderr.startswith("error: ") and says in r.stderr, r.stderr
    r = lepton("train", "--model", "mlp", "--data", "digits", "--name", "x", "--label-fraction", "0.001")
    assert r.returncode == 2 and "without one" in r.stderr
    r = lepton("train", "--data", "digits", "--name", "x")
    assert r.returncode == 2 and "--model" in r.stderr and "--init" in r.stderr


def test_two_processes_pretrain_one_backbone() -> None:
    r = lepton(
        "pretrain",
        "--model",
        "mlp",
        "--data",
        "breast_cancer",
        "--method",
        "simclr",
        "--name",
        "bc",
        "--epochs",
        "2",
        "--nproc",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["world_size"] == 2 and doc["version"] == 1 and len(doc["epochs"]) == 2
    shown = json.loads(lepton("models", "show", "bc:1", "--json").stdout)
    assert shown["recipe"]["pretraining"]["world_size"] == 2
    assert shown["recipe"]["pretraining"]["views"] == {"tables": {"method": "scarf", "rate": 0.6}}
