"""How examples reach a model: the contract a model offers the data and training code (`Learner`),
input conversion, device-ready batches, and the checks that a data set fits a model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from lepton_ai.data.datasets import LabeledData
from lepton_ai.errors import InvalidInputError

# What one batch is: a tensor of examples, or a text model's token tensors.
Batch = torch.Tensor | dict[str, torch.Tensor]


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
    def normalizer(self) -> Normalizer | None: ...

    def tokenize(
        self, texts: Sequence[str], device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]: ...


def as_inputs(model: Learner, inputs: Any) -> torch.Tensor | list[str]:
    """Return model inputs from a data set, a tensor, an array, nested lists or strings."""
    if isinstance(inputs, LabeledData):
        if inputs.texts is not None:
            return inputs.texts
        assert inputs.features is not None
        return inputs.features
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        return list(inputs)
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


def batches(
    model: Learner,
    xs: torch.Tensor | list[str],
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
    xs: torch.Tensor | list[str],
    idx: torch.Tensor,
    device: torch.device,
    channels_last: bool = False,
) -> Batch:
    """Return the examples of `xs` at `idx` as one device-ready batch (tokenised for text models)."""
    if isinstance(xs, list):
        return model.tokenize([xs[i] for i in idx.tolist()], device)
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
