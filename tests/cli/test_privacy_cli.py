"""`lepton privacy audit`: a membership-inference audit of a registered version, stored with it and shown by
`lepton models show`; bad input as one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lepton_ai.train.job import train_and_register


def lepton(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args], capture_output=True, text=True
    )


def test_an_audit_is_printed_stored_and_shown() -> None:
    trained = lepton("train", "--model", "mlp", "--data", "digits", "--name", "d", "--epochs", "3", "--json")
    assert trained.returncode == 0, trained.stderr
    r = lepton(
        "privacy", "audit", "d", "--data", "digits", "--shadow-models", "2", "--examples", "60", "--json"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["ref"], doc["variant"], doc["members"], doc["non_members"]) == ("d:1", "online", 60, 60)
    for attack in ("lira", "loss"):
        f = doc[attack]
        assert 0 <= f["auc_ci"][0] <= f["auc"] <= f["auc_ci"][1] <= 1
        assert 0 <= f["tpr_ci"][0] <= f["tpr_ci"][1] <= 1
    assert doc["recipe"]["model"] == "mlp" and doc["recipe"]["fit_options"]["epochs"] == 3
    shown = json.loads(lepton("models", "show", "d", "--json").stdout)["privacy_audit"]
    assert {k: v for k, v in shown.items() if k != "recorded_at"} == doc
    people = lepton("models", "show", "d:1")
    assert f"LiRA (online, 2 shadow models) AUC {doc['lira']['auc']:.3f}" in people.stdout


def test_bad_audit_input_is_one_line(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    train_and_register("mlp", "iris", "i", epochs=2, device="cpu", progress=False)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    assert cli("models", "register", "by-hand", str(weights))[0] == 0
    cases = [
        (("i", "--data", "iris", "--shadow-models", "0"), "--shadow-models must be at least 1"),
        (("ghost", "--data", "iris"), "unknown model 'ghost'"),
        (("i", "--data", "digits"), "was trained on iris, not digits"),
        (("by-hand", "--data", "iris"), "no training run in the registry"),
        (("i", "--data", "iris", "--examples", "3"), "--examples must be at least 20"),
        # 30 held-out irises: too few to attack offline, where half of them train the shadow models
        (("i", "--data", "iris", "--offline"), "at least 20 members"),
    ]
    for args, says in cases:
        code, _, err = cli("privacy", "audit", *args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, (args, err)
