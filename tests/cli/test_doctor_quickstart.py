from __future__ import annotations

import json

from lepton_ai.cli.main import main


def run(capsys, *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().out


def test_doctor_json_reports_machine_extras_and_registry(capsys, lepton_home) -> None:
    code, out = run(capsys, "doctor", "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["machine"]["torch"] and doc["machine"]["cpu"]["cores"] >= 1
    assert isinstance(doc["machine"]["cpu"]["flags"], list)
    assert doc["extras"]["postgres"] is True  # installed by the test setup
    assert doc["registry"]["ok"] and doc["registry"]["models"] == 0
    assert str(lepton_home) in doc["registry"]["db_url"] and doc["registry"]["artifacts"].startswith(str(lepton_home))


def test_doctor_masks_database_passwords(capsys, monkeypatch) -> None:
    monkeypatch.setenv("LEPTON_DB_URL", "postgresql://admin:s3cret@127.0.0.1:1/nothing")
    code, out = run(capsys, "doctor", "--json")
    assert "s3cret" not in out
    assert json.loads(out)["registry"]["ok"] is False


def test_quickstart_round_trips_a_model_through_the_registry(capsys) -> None:
    code, out = run(capsys, "quickstart")
    assert code == 0 and "verified and reloaded" in out
    code, out = run(capsys, "models", "show", "quickstart-demo", "--json")
    doc = json.loads(out)
    assert doc["version"] == 1 and doc["format"] == "safetensors" and doc["metrics"]["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
