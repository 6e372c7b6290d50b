from __future__ import annotations

import numpy as np
import pytest

from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy.partition import partition, partition_indices


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train")


def label_skew(parts) -> float:
    """Mean share of each client's most common label (0.1 for balanced 10-class parts, 1.0 for
    single-class ones)."""
    return float(np.mean([np.bincount(p.labels.numpy()).max() / len(p) for p in parts]))


def test_iid_sizes_cover_every_example_once(digits) -> None:
    parts = partition(digits, "iid", 10)
    sizes = [len(p) for p in parts]
    assert sum(sizes) == len(digits) and max(sizes) - min(sizes) <= 1
    idx = np.concatenate(partition_indices(digits.labels.numpy(), "iid", 10))
    assert sorted(idx.tolist()) == list(range(len(digits)))
    assert parts[3].name == "digits[train][client 3/10]" and parts[3].input_size == digits.input_size
    assert label_skew(parts) < 0.2


def test_the_same_seed_gives_the_same_split(digits) -> None:
    a = partition_indices(digits.labels.numpy(), "dirichlet:0.3", 7, seed=5)
    b = partition_indices(digits.labels.numpy(), "dirichlet:0.3", 7, seed=5)
    c = partition_indices(digits.labels.numpy(), "dirichlet:0.3", 7, seed=6)
    assert all((x == y).all() for x, y in zip(a, b)) and any(
        len(x) != len(z) or (x != z).any() for x, z in zip(a, c)
    )


def test_dirichlet_skew_grows_as_alpha_shrinks_and_no_client_is_empty(digits) -> None:
    skews = []
    for alpha in (100, 1, 0.1):
        parts = partition(digits, f"dirichlet:{alpha}", 10)
        assert sum(len(p) for p in parts) == len(digits) and min(len(p) for p in parts) >= 1
        skews.append(label_skew(parts))
    assert skews[0] < skews[1] < skews[2] and skews[0] < 0.2 and skews[2] > 0.45
    many = partition(digits, "dirichlet:0.05", 1000)
    assert min(len(p) for p in many) >= 1 and sum(len(p) for p in many) == len(digits)


def test_shards_give_each_client_k_label_runs(digits) -> None:
    parts = partition(digits, "shards:2", 20)
    assert sum(len(p) for p in parts) == len(digits)
    # two sorted shards, each 1-2 labels
    assert max(len(np.unique(p.labels.numpy())) for p in parts) <= 4
    assert label_skew(parts) > 0.45


@pytest.mark.parametrize(
    ("scheme", "n", "message"),
    [
        ("iid", 2000, "2000 clients but only 1257 examples"),
        ("dirichlet:0", 10, "alpha must be > 0"),
        ("dirichlet:-1", 10, "alpha must be > 0"),
        ("dirichlet:x", 10, "not a number"),
        ("zipf", 10, "unknown partition 'zipf'"),
        ("shards:0", 10, "K must be a whole number ≥ 1"),
        ("shards:200", 10, "more than the 1257 examples"),
        ("iid", 0, "whole number ≥ 1"),
    ],
)
def test_bad_input_is_one_line(digits, scheme: str, n: int, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as e:
        partition(digits, scheme, n)
    assert "\n" not in str(e.value)
