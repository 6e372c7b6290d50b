from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[..., tuple[int, str, str]]


def test_doctor_json_reports_machine_extras_and_registry(cli: Cli, lepton_home: Path) -> None:
    code, out, _ = cli("doctor", "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["machine"]["torch"] and doc["machine"]["cpu"]["cores"] >= 1
    assert isinstance(doc["machine"]["cpu"]["flags"], list)
    # installed by the test setup
    assert doc["extras"]["postgres"] is True
    assert doc["registry"]["ok"] and doc["registry"]["models"] == 0
    assert str(lepton_home) in doc["registry"]["db_url"] and doc["registry"]["artifacts"].startswith(
        str(lepton_home)
    )


def test_doctor_masks_database_passwords(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_DB_URL", "postgresql://admin:s3cret@127.0.0.1:1/nothing")
    _, out, _ = cli("doctor", "--json")
    assert "s3cret" not in out
    assert json.loads(out)["registry"]["ok"] is False


def test_quickstart_trains_registers_reloads_optimizes_and_serves(cli: Cli, tmp_path: Path) -> None:
    code, out, _ = cli(
        "quickstart", "--epochs", "3", "--report", str(tmp_path / "report"), "--load-seconds", "1"
    )
    assert code == 0 and "trained, registered, verified and reloaded digits-cnn:1" in out
    assert "registered digits-cnn:2 (parent digits-cnn:1)" in out
    assert "/predict answers like the model in process" in out
    assert "requests/s" in out and "errors" in out and "none" in out
    assert {"report.json", "report.md", "report.png"} <= {p.name for p in (tmp_path / "report").iterdir()}
    optimized = json.loads(cli("models", "show", "digits-cnn:2", "--json")[1])
    assert optimized["parent"] == "digits-cnn:1" and optimized["recipe"]["candidate"]
    assert optimized["metrics"]["speedup"] >= 1.0
    code, out, _ = cli("models", "show", "digits-cnn:1", "--json")
    doc = json.loads(out)
    assert doc["version"] == 1 and doc["format"] == "lepton" and doc["metrics"]["accuracy"] > 0.9
    run_doc = json.loads(cli("runs", "show", str(doc["run_id"]), "--json")[1])
    assert run_doc["status"] == "completed" and len(run_doc["history"]["train_loss"]) == 3
