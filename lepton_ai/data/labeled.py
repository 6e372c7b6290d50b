"""`LabeledData`: examples with integer labels, as every data set is handed to a model."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch


@dataclass
class LabeledData(torch.utils.data.Dataset):
    """Examples with integer labels. `features` is a float tensor (tabular rows or images,
    N×C×H×W), or `texts` a list of strings; `classes` names each label id. Unlabelled
    sentences (for embedding models) have no classes and all labels 0."""

    kind: Literal["tabular", "image", "text"]
    labels: torch.Tensor
    classes: list[str]
    features: torch.Tensor | None = None
    texts: list[str] | None = None
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # what a model computed from these examples once (their tokens, a frozen encoder's features), per model
    cache: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if self.texts is not None:
            return self.texts[i], int(self.labels[i])
        assert self.features is not None
        return self.features[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        """Return the number of classes."""
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, ...]:
        """Return the shape of one example: (features,), (C, H, W), or () for text."""
        return () if self.features is None else tuple(self.features.shape[1:])

    def subset(self, index: np.ndarray | list[int], suffix: str = "") -> LabeledData:
        """Return the examples at `index` as a new data set."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return LabeledData(
            kind=self.kind,
            labels=self.labels[idx],
            classes=self.classes,
            features=None if self.features is None else self.features[idx],
            texts=None if self.texts is None else [self.texts[i] for i in idx.tolist()],
            name=self.name + suffix,
            meta=dict(self.meta),
        )

    @staticmethod
    def joined(parts: list[LabeledData], name: str = "") -> LabeledData:
        """Return the examples of `parts` (one kind, the same classes) one after another, as one set."""
        first = parts[0]
        if any(p.kind != first.kind or p.classes != first.classes for p in parts):
            from lepton_ai.errors import InvalidInputError

            raise InvalidInputError("only data sets of one kind with the same classes can be joined")
        features = [p.features for p in parts if p.features is not None]
        return LabeledData(
            kind=first.kind,
            labels=torch.cat([p.labels for p in parts]),
            classes=first.classes,
            features=torch.cat(features) if features else None,
            texts=None if first.texts is None else [t for p in parts for t in p.texts or []],
            name=name or "+".join(p.name for p in parts),
            meta=dict(first.meta),
        )

    def labelled_share(self, fraction: float, seed: int = 0) -> LabeledData:
        """Return a seeded, stratified `fraction` of the examples (each class its rounded share), so that
        methods compared on few labels see the same ones; refuse a fraction that leaves a class with none."""
        from lepton_ai.errors import InvalidInputError

        if not 0 < fraction <= 1:
            raise InvalidInputError(f"--label-fraction must be in (0, 1], not {fraction}")
        labels = self.labels.numpy()
        rng = np.random.default_rng(seed)
        kept = []
        for label in range(self.num_classes):
            members = np.flatnonzero(labels == label)
            take = round(fraction * len(members))
            if take == 0:
                raise InvalidInputError(
                    f"--label-fraction {fraction} leaves class {self.classes[label]!r} ({len(members)} "
                    f"examples) without one: use at least {1 / max(1, 2 * len(members)):.3g}"
                )
            kept.append(rng.permutation(members)[:take])
        return self.subset(np.sort(np.concatenate(kept)), suffix=f"[{fraction:g} of labels]")
