"""Split a data set among federated clients: IID, label-skewed by a Dirichlet draw per class
(Hsu et al. 2019), or in label-sorted shards (McMahan et al. 2017). The same data, scheme, number of
clients and seed give the same split, so separate client processes each find their own part."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lepton_ai.errors import InvalidInputError

if TYPE_CHECKING:
    from lepton_ai.data import LabeledData

SCHEMES = "iid, dirichlet:ALPHA or shards:K"


def parse_scheme(scheme: str) -> tuple[str, float]:
    """Return (kind, parameter) of "iid", "dirichlet[:ALPHA]" (default 0.5) or "shards[:K]" (default 2)."""
    kind, _, arg = str(scheme).strip().lower().partition(":")
    if kind == "iid" and not arg:
        return kind, 0.0
    if kind not in ("dirichlet", "shards"):
        raise InvalidInputError(f"unknown partition {scheme!r}: use {SCHEMES}")
    try:
        value = float(arg) if arg else (0.5 if kind == "dirichlet" else 2.0)
    except ValueError:
        raise InvalidInputError(f"partition {scheme!r}: {arg!r} is not a number") from None
    if not np.isfinite(value):
        raise InvalidInputError(f"partition {scheme!r}: the parameter must be a finite number")
    if kind == "dirichlet" and not value > 0:
        raise InvalidInputError(
            f"partition {scheme!r}: the Dirichlet alpha must be > 0 (smaller is more skewed)"
        )
    if kind == "shards" and (value < 1 or value != int(value)):
        raise InvalidInputError(f"partition {scheme!r}: the shards per client K must be a whole number ≥ 1")
    return kind, value


def partition_indices(labels: np.ndarray, scheme: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """Return the example indices of each of `n` clients (each non-empty, sorted) under `scheme`."""
    kind, value = parse_scheme(scheme)
    labels = np.asarray(labels)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise InvalidInputError(f"the number of clients must be a whole number ≥ 1, got {n!r}")
    n = int(n)
    if n > len(labels):
        raise InvalidInputError(
            f"{n} clients but only {len(labels)} examples: each client needs at least one"
        )
    rng = np.random.default_rng(seed)
    if kind == "iid":
        parts = np.array_split(rng.permutation(len(labels)), n)
    elif kind == "shards":
        k = int(value)
        if n * k > len(labels):
            raise InvalidInputError(f"{n} clients × {k} shards is more than the {len(labels)} examples")
        # by label, ties in random order
        ordered = np.lexsort((rng.random(len(labels)), labels))
        shards = np.array_split(ordered, n * k)
        owner = rng.permutation(n * k)
        parts = [np.concatenate([shards[s] for s in owner[i * k : (i + 1) * k]]) for i in range(n)]
    else:
        parts = _dirichlet(labels, value, n, rng)
    return [np.sort(p) for p in parts]


def _dirichlet(labels: np.ndarray, alpha: float, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each class's examples go to clients in proportions drawn from Dir(alpha); empty clients then take
    one example each from the largest ones, so every client has data and the skew stays."""
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        share = rng.dirichlet(np.full(n, alpha))
        cuts = (np.cumsum(share)[:-1] * len(idx)).round().astype(int)
        for client, part in enumerate(np.split(idx, cuts)):
            owner[part] = client
    counts = np.bincount(owner, minlength=n)
    for empty in np.flatnonzero(counts == 0):
        donor = int(counts.argmax())
        moved = rng.choice(np.flatnonzero(owner == donor))
        owner[moved], counts[donor], counts[empty] = empty, counts[donor] - 1, 1
    return [np.flatnonzero(owner == i) for i in range(n)]


def partition(data: LabeledData, scheme: str, n: int, seed: int = 0) -> list[LabeledData]:
    """Split `data` among `n` clients by `scheme` ("iid", "dirichlet:ALPHA", "shards:K"); return their data
    sets."""
    # torch, imported when a split is made
    from lepton_ai.data import LabeledData

    if not isinstance(data, LabeledData):
        raise InvalidInputError(f"expected a data set from lepton_ai.data.load(), got {type(data).__name__}")
    parts = partition_indices(data.labels.numpy(), scheme, n, seed)
    return [data.subset(p, suffix=f"[client {i}/{n}]") for i, p in enumerate(parts)]
