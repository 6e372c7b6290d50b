"""Splits: stratified, seeded, and stable from one version to the next."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_ai.data.splits import Fractions, assign, parse_fractions
from lepton_ai.errors import InvalidInputError


def keys(n: int, prefix: str = "k") -> np.ndarray:
    return np.array([f"{prefix}{i:05d}" for i in range(n)], dtype=object)


def test_each_class_is_split_in_the_fractions_asked() -> None:
    labels = np.array(["a"] * 700 + ["b"] * 300, dtype=object)
    split = assign(labels, keys(1000), Fractions(0.7, 0.1, 0.2), seed=0)
    for label, size in (("a", 700), ("b", 300)):
        mine = split[labels == label]
        assert [int((mine == s).sum()) for s in ("train", "val", "test")] == [
            round(0.7 * size),
            round(0.1 * size),
            round(0.2 * size),
        ]


def test_the_same_records_and_seed_give_the_same_splits_whatever_their_order() -> None:
    labels, k = np.array(["a", "b"] * 100, dtype=object), keys(200)
    first = assign(labels, k, Fractions(0.8, 0.0, 0.2), seed=3)
    order = np.random.default_rng(1).permutation(200)
    again = assign(labels[order], k[order], Fractions(0.8, 0.0, 0.2), seed=3)
    assert dict(zip(k, first)) == dict(zip(k[order], again))
    assert dict(zip(k, first)) != dict(zip(k, assign(labels, k, Fractions(0.8, 0.0, 0.2), seed=4)))


def test_records_keep_their_split_and_new_ones_fill_the_shares() -> None:
    labels, k = np.array(["a"] * 100, dtype=object), keys(100)
    first = assign(labels, k, Fractions(0.7, 0.1, 0.2), seed=0)
    grown_labels = np.array(["a"] * 200, dtype=object)
    grown_keys = np.concatenate([k, keys(100, "new")])
    second = assign(grown_labels, grown_keys, Fractions(0.7, 0.1, 0.2), 0, dict(zip(k, first)))
    assert list(second[:100]) == list(first)
    assert [int((second == s).sum()) for s in ("train", "val", "test")] == [140, 20, 40]


@pytest.mark.parametrize("text", ["0.7,0.2", "0.5,0.5,0.5", "a,b,c", "0,0.5,0.5", "-0.1,0.6,0.5"])
def test_fractions_that_are_not_three_shares_of_one_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="TRAIN,VAL,TEST"):
        parse_fractions(text)
