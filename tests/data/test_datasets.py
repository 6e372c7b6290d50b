from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError, NotFoundError


@pytest.mark.parametrize(
    "name, n, size, classes",
    [
        ("digits", 1797, (1, 8, 8), 10),
        ("breast_cancer", 569, (30,), 2),
        ("wine", 178, (13,), 3),
        ("iris", 150, (4,), 3),
    ],
)
def test_builtin_sets_split_deterministically_and_stratified(
    name: str, n: int, size: tuple, classes: int
) -> None:
    parts = {s: load(name, s) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == n
    assert all(p.input_size == size and p.num_classes == classes for p in parts.values())
    assert len(parts["test"]) == pytest.approx(0.2 * n, abs=2)
    # same seed, same split
    assert torch.equal(load(name, "test").labels, parts["test"].labels)
    assert not torch.equal(load(name, "test", seed=1).features, parts["test"].features)
    full = np.bincount(load(name).labels.numpy()) / n
    test = np.bincount(parts["test"].labels.numpy(), minlength=classes) / len(parts["test"])
    # class balance kept
    assert np.abs(full - test).max() < 0.05


def test_csv_tabular_and_string_labels(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    rows = ["a,b,species"] + [f"{i},{i % 7},{'cat' if i % 2 else 'dog'}" for i in range(40)]
    f.write_text("\n".join(rows))
    d = load(f, "train", label="species")
    assert d.kind == "tabular" and d.input_size == (2,) and d.classes == ["cat", "dog"]
    with pytest.raises(InvalidInputError, match="no label column 'label'"):
        load(f)


def test_jsonl_text(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"sentence {i}", "label": i % 2}) for i in range(30)))
    d = load(f, "all")
    assert d.kind == "text" and d.texts[0] == "sentence 0" and d.classes == ["0", "1"]
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "label": 1}\n{oops\n')
    with pytest.raises(InvalidInputError, match="bad.jsonl:2"):
        load(tmp_path / "bad.jsonl")


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.new("RGB", (20, 30), colour).save(tmp_path / cls / f"{i}.png")
    d = load(tmp_path, image_size=16)
    assert d.kind == "image" and d.input_size == (3, 16, 16) and d.classes == ["blue", "red"]
    # red channel of "red"
    assert float(d.features[d.labels == 1][:, 0].mean()) == pytest.approx(1.0)


def test_unknown_data_is_a_clear_error() -> None:
    with pytest.raises(NotFoundError, match="no data set 'nope'"):
        load("nope")
    with pytest.raises(InvalidInputError, match="split must be"):
        load("iris", "validation")  # type: ignore[arg-type]


def test_sentences_for_embedding_models(tmp_path) -> None:
    docs = load("python-docs")
    assert docs.kind == "text" and docs.num_classes == 0 and len(docs) > 1000
    assert all(40 <= len(s) <= 300 for s in docs.texts)
    parts = [set(load("python-docs", s).texts) for s in ("train", "val", "test")]
    # held out, nothing lost
    assert not (parts[0] & parts[2]) and sum(map(len, parts)) == len(docs)
    f = tmp_path / "sentences.txt"
    f.write_text("The first sentence.\n\n  The second one.  \n")
    assert load(f).texts == ["The first sentence.", "The second one."]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(InvalidInputError, match="no sentences"):
        load(tmp_path / "empty.txt")
