"""`lepton data add / list / show` on the command line; a model trained on a dataset version names it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.data.conftest import write_digits


def test_add_list_show(cli, tmp_path: Path) -> None:
    folder = write_digits(tmp_path / "digits", 120)
    (folder / "5" / "broken.png").write_bytes(b"nope")
    code, out, _ = cli("data", "add", "digits-img", str(folder), "--split", "0.6,0.2,0.2")
    assert code == 0 and "registered digits-img:1: 120 records" in out and "5/broken.png" in out, out
    code, out, _ = cli("data", "list", "--json")
    assert [(d["name"], d["latest_version"], d["records"]) for d in json.loads(out)] == [
        ("digits-img", 1, 120)
    ]
    code, out, _ = cli("data", "show", "digits-img:1", "--json")
    shown = json.loads(out)
    assert shown["stats"]["quarantined"] == 1 and shown["stats"]["fractions"] == [0.6, 0.2, 0.2]
    assert sum(shown["stats"]["splits"].values()) == 120


def test_errors_are_one_line_with_exit_code_2(cli, tmp_path: Path) -> None:
    for args in (
        ["data", "add", "x", str(tmp_path / "missing")],
        ["data", "add", "x", str(tmp_path), "--split", "1,1,1"],
        ["data", "show", "nothing"],
    ):
        code, out, err = cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and not out, (args, out, err)


def test_a_model_trained_on_a_dataset_version_names_it(cli, tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    assert cli("data", "add", "cancer", str(tmp_path / "cancer.csv"), "--json")[0] == 0
    code, out, err = cli(
        "train", "--model", "mlp", "--data", "cancer", "--name", "c", "--epochs", "1", "--json"
    )
    assert code == 0, err
    shown = json.loads(cli("models", "show", "c", "--json")[1])
    assert shown["dataset"] == "cancer:1" and "trained on cancer:1" in shown["description"]


def test_clean_lists_label_issues_and_drops_them(cli, tmp_path: Path) -> None:
    from tests.data.test_clean import flip

    root = write_digits(tmp_path / "digits", 400)
    flip(root, 0.05)
    assert cli("data", "add", "noisy", str(root), "--json")[0] == 0
    code, out, err = cli("data", "clean", "noisy", "--label-issues", "--drop", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["cleaned"] == "noisy:2" and len(result["issues"]) >= 10
    assert {"record", "given", "suggested", "given_probability"} <= set(result["issues"][0])
    code, _, err = cli("data", "clean", "noisy")
    assert code == 2 and "--label-issues" in err


def test_show_writes_the_dataset_card(cli, tmp_path: Path) -> None:
    folder = write_digits(tmp_path / "digits", 60)
    assert cli("data", "add", "d", str(folder), "--json")[0] == 0
    code, out, err = cli("data", "show", "d", "--card", str(tmp_path / "card"))
    assert code == 0, err
    card = (tmp_path / "card" / "card.md").read_text()
    assert (
        card.startswith("# d:1") and "![classes](classes.png)" in card and "![samples](samples.png)" in card
    )
    for png in ("classes.png", "samples.png"):
        assert (tmp_path / "card" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_ray_backend_needs_a_cluster(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folder = write_digits(tmp_path / "digits", 20)
    code, _, err = cli("data", "add", "d", str(folder), "--backend", "ray")
    assert code == 2 and "--address HEAD:6379 or RAY_ADDRESS" in err
    code, _, err = cli("data", "add", "d", str(folder), "--backend", "spark")
    assert code == 2 and "local or ray" in err
