"""Likely wrong labels found with cleanlab on real digits whose labels were flipped on purpose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lepton_ai.data import load
from lepton_ai.data.clean import drop_label_issues, label_issues
from lepton_ai.data.ingest import add
from lepton_ai.errors import InvalidInputError
from lepton_ai.store.datasets import Datasets
from tests.data.conftest import write_digits


def flip(root: Path, share: float, seed: int = 0) -> set[str]:
    """Move a seeded `share` of the files to another class's folder; return their new paths."""
    rng = np.random.default_rng(seed)
    files = sorted(root.glob("*/*.png"))
    flipped = set()
    for f in rng.choice(files, int(share * len(files)), replace=False):
        other = str((int(f.parent.name) + int(rng.integers(1, 10))) % 10)
        f.rename(root / other / f.name)
        flipped.add(f"{other}/{f.name}")
    return flipped


def test_flipped_labels_are_found_and_dropped(tmp_path: Path) -> None:
    root = write_digits(tmp_path / "digits", 800)
    flipped = flip(root, 0.05)
    add("noisy", str(root))
    info, issues = label_issues("noisy")
    found = {i.record for i in issues}
    recall, precision = len(found & flipped) / len(flipped), len(found & flipped) / len(found)
    # on 800 examples 0.9–1.0 over draws (benchmarks/data.py measures the whole set against the figures asked)
    assert recall >= 0.85 and precision >= 0.85, (recall, precision)
    # a flipped file's suggestion is mostly its true class
    by_record = {i.record: i for i in issues}
    assert all(by_record[r].given == r.split("/")[0] for r in found & flipped)
    assert Datasets().get("noisy:1").stats["label_issues"] == len(issues)
    cleaned = drop_label_issues(info, issues)
    assert cleaned.ref == "noisy:2" and cleaned.records == 800 - len(issues)
    assert cleaned.stats["dropped_label_issues"] == len(issues) and cleaned.stats["cleaned_from"] == "noisy:1"
    # splits kept: each record stays where it was
    before = {s: set(load("noisy:1", s).meta["keys"]) for s in ("train", "test")}
    after = {s: set(load("noisy:2", s).meta["keys"]) for s in ("train", "test")}
    assert all(after[s] <= before[s] for s in after)


def test_a_class_of_one_is_refused_clearly(tmp_path: Path) -> None:
    root = write_digits(tmp_path / "digits", 30)
    for extra in sorted((root / "9").glob("*.png"))[1:]:
        extra.unlink()
    add("tiny", str(root))
    with pytest.raises(InvalidInputError, match="a class has 1 example"):
        label_issues("tiny")
