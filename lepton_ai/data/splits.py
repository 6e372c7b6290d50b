"""A dataset version's splits: seeded, stratified by class, and stable — a record that was in the previous
version keeps its split, so a test record never becomes a training one; duplicates are one record."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lepton_ai.errors import InvalidInputError

SPLITS = ("train", "val", "test")


class Fractions(NamedTuple):
    """The share of each split."""

    train: float
    val: float
    test: float


def parse_fractions(text: str) -> Fractions:
    """Parse `TRAIN,VAL,TEST` (e.g. `0.7,0.1,0.2`), which must be non-negative and add up to 1."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or abs(sum(parts) - 1) > 1e-6:
        raise InvalidInputError(
            f"--split {text!r}: expected TRAIN,VAL,TEST fractions adding up to 1, e.g. 0.7,0.1,0.2"
        )
    return Fractions(*parts)


def assign(
    labels: np.ndarray,
    keys: np.ndarray,
    fractions: Fractions,
    seed: int,
    previous: dict[str, str] | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Return each record's split: in each class, records of the previous version keep theirs, and the new
    ones, in a seeded order, fill each split up to its share of the class; then records of one group (near
    duplicates) all take one split, so that none is tested on a copy of what it was trained on."""
    previous = previous or {}
    out = np.array([previous.get(k, "") for k in keys], dtype=object)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        new = members[out[members] == ""]
        if not len(new):
            continue
        # sorted by key first: the order depends on the records, not on how they were listed
        new = new[np.argsort(keys[new], kind="stable")][rng.permutation(len(new))]
        out[new] = _fill(out[members], len(members), new, fractions)
    if groups is None:
        return out
    # only a group that gained a record can have to move it: the others were put together before
    gained = {group for group, key in zip(groups.tolist(), keys.tolist()) if key not in previous}
    grown = np.array([group in gained for group in groups.tolist()], dtype=bool)
    out[grown] = _together(out[grown], keys[grown], groups[grown], previous)
    return out


def _together(out: np.ndarray, keys: np.ndarray, groups: np.ndarray, previous: dict[str, str]) -> np.ndarray:
    """Return `out` with each group's records in one split: that of a member the previous version had, else
    that of its smallest key."""
    import pandas as pd

    frame = pd.DataFrame(
        {"group": groups, "split": out, "key": keys, "new": [k not in previous for k in keys]}
    )
    first = frame.sort_values(["new", "key"]).groupby("group", sort=False)["split"].first()
    return frame["group"].map(first).to_numpy(dtype=object)


def _fill(current: np.ndarray, size: int, new: np.ndarray, fractions: Fractions) -> np.ndarray:
    """Return the splits of the `new` records of a class of `size`: test and val up to their shares, the rest
    train."""
    splits = np.full(len(new), "train", dtype=object)
    at = 0
    for split, share in (("test", fractions.test), ("val", fractions.val)):
        wanted = max(0, round(share * size) - int((current == split).sum()))
        take = min(wanted, len(new) - at)
        splits[at : at + take] = split
        at += take
    return splits
