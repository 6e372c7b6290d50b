"""How examples reach a model: the contract a model offers the data and training code (`Learner`),
input conversion, device-ready batches, and the checks that a data set fits a model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from lepton_ai.data.datasets import LabeledData
from lepton_ai.errors import InvalidInputError

# What one batch is: a tensor of examples, or a text model's token tensors.
Batch = torch.Tensor | dict[str, torch.Tensor]
# How many batches' worth of examples are sorted by length together (Hugging Face's megabatch).
_GROUP_BATCHES = 50


@dataclass(frozen=True)
class Tokens:
    """Texts tokenised once: each example's token ids (right-padded to the longest) and its length; a batch
    is cut from them padded only to its own longest example."""

    ids: torch.Tensor
    lengths: torch.Tensor
    pad_id: int
    # BERT-style encoders take segment ids; a batch gets zeros (one segment)
    type_ids: bool = False

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Return the examples at `idx` as token tensors padded to the longest of them, on `device`."""
        lengths = self.lengths[idx]
        width = max(1, int(lengths.max())) if len(idx) else 1
        ids = self.ids[idx, :width]
        mask = (torch.arange(width) < lengths[:, None]).long()
        batch = {"input_ids": ids, "attention_mask": mask}
        if self.type_ids:
            batch["token_type_ids"] = torch.zeros_like(ids)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    @classmethod
    def of(cls, rows: list[list[int]], pad_id: int, type_ids: bool) -> Tokens:
        """Return the token id lists `rows` as one right-padded table."""
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        ids = pad_sequence(
            [torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=pad_id
        )
        return cls(ids, lengths, pad_id, type_ids)


class Normalizer(Protocol):
    """Input statistics a model keeps (mean and std), fitted on training data before the first step."""

    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def fit(self, x: torch.Tensor) -> None: ...


@runtime_checkable
class Learner(Protocol):
    """What the data and training code know of a model (LeptonModel is one): its classes, the shape of
    one example (() for text), how raw inputs map to features, its input statistics, its tokenizer."""

    num_classes: int
    input_size: tuple[int, ...]
    preprocess: dict[str, Any]

    @property
    def is_text(self) -> bool: ...

    @property
    def family(self) -> str:
        """Return how it trains unless told otherwise: "scratch", "transformer", "lora" or "head"."""
        ...

    @property
    def normalizer(self) -> Normalizer | None: ...

    def tokenize(
        self, texts: Sequence[str], device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]: ...

    def encode(self, texts: Sequence[str]) -> Tokens: ...


def as_inputs(model: Learner, inputs: Any) -> torch.Tensor | Tokens:
    """Return model inputs from a data set, a tensor, an array, nested lists or strings (texts tokenised,
    a data set's once per model and maximum length)."""
    if isinstance(inputs, LabeledData):
        if inputs.texts is not None:
            return _encoded(model, inputs)
        assert inputs.features is not None
        return inputs.features
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        return model.encode(list(inputs))
    if model.is_text:
        raise InvalidInputError("this is a text model: give it a list of strings")
    if isinstance(inputs, torch.Tensor):
        x = inputs.float()
    else:
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    expected = tuple(model.input_size)
    if expected and tuple(x.shape[1:]) != expected:
        if tuple(x.shape) != expected:
            raise InvalidInputError(
                f"inputs of shape {tuple(x.shape[1:])} do not fit the model's input_size {expected}"
            )
        x = x.unsqueeze(0)
    return x


def _encoded(model: Learner, data: LabeledData) -> Tokens:
    """Return the texts of `data` tokenised by `model`, from the data set's cache when they already were."""
    assert data.texts is not None
    # a model's maximum length decides where texts are cut
    key = ("tokens", model.preprocess.get("max_length"))
    cached = data.cache.setdefault(model, {})
    if key not in cached:
        cached[key] = model.encode(data.texts)
    tokens: Tokens = cached[key]
    return tokens


def length_grouped(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Return the batches of `order` with examples of like length together (Hugging Face's group_by_length):
    each run of 50 batches' worth is sorted by length and cut into batches, which are then shuffled. An
    epoch of fewer than 50 batches stays in random batches: grouping would save little there, and sorting so
    few batches by length makes them far less random (a set of repeated sentences, one label per batch)."""
    if len(order) < batch_size * _GROUP_BATCHES:
        return list(order.split(batch_size))
    plan: list[torch.Tensor] = []
    for group in order.split(batch_size * _GROUP_BATCHES):
        by_length = group[torch.argsort(lengths[group], descending=True, stable=True)]
        plan += list(by_length.split(batch_size))
    return [plan[int(i)] for i in torch.randperm(len(plan), generator=generator)]


def batches(
    model: Learner,
    xs: torch.Tensor | Tokens,
    batch_size: int,
    device: torch.device,
    order: torch.Tensor | None = None,
    channels_last: bool = False,
) -> Iterator[Batch]:
    """Yield device-ready batches of `xs` (tokenised for text models), in `order` (all or some indices)."""
    order = torch.arange(len(xs)) if order is None else order
    for start in range(0, len(order), batch_size):
        yield take(model, xs, order[start : start + batch_size], device, channels_last)


def take(
    model: Learner,
    xs: torch.Tensor | Tokens,
    idx: torch.Tensor,
    device: torch.device,
    channels_last: bool = False,
) -> Batch:
    """Return the examples of `xs` at `idx` as one device-ready batch (token tensors for text models)."""
    if isinstance(xs, Tokens):
        return xs.batch(idx, device)
    x = xs[idx].to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def check_data(model: Learner, data: LabeledData) -> None:
    """Raise, naming both sides, when `data` does not fit `model` (classes, input shape, kind)."""
    if not isinstance(data, LabeledData):
        raise InvalidInputError(f"expected a data set from lepton_ai.data.load(), got {type(data).__name__}")
    if data.num_classes != model.num_classes:
        raise InvalidInputError(
            f"the data has {data.num_classes} classes ({data.name}) but the model was built "
            f"with num_classes={model.num_classes}"
        )
    if model.is_text != (data.kind == "text"):
        kind = "text" if model.is_text else "tensors"
        raise InvalidInputError(f"the model takes {kind} but {data.name} is {data.kind} data")
    if not model.is_text and tuple(data.input_size) != tuple(model.input_size):
        raise InvalidInputError(
            f"the data's examples have shape {tuple(data.input_size)} but the model was built "
            f"with input_size={tuple(model.input_size)}"
        )
