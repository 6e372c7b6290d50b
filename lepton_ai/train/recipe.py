"""How each model family trains unless told otherwise: a pretrained transformer is fine-tuned as the field
does it (AdamW at a small learning rate, linear warmup then decay, weight decay, gradient clipping), a
convnet or an MLP trained from scratch keeps what works for it. An option the user gives always wins."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

SCHEDULES = ("cosine", "linear", "onecycle", "none")


class TrainingNotice(UserWarning):
    """Something a user should know about a training that did not fail (it learned nothing useful, say)."""


@dataclass(frozen=True)
class Recipe:
    """The options of one training: epochs, learning rate, batch size, weight decay, schedule, the warmup's
    share of the steps (linear schedule) and the gradient clipping norm (0 or None: no clipping)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    schedule: str
    warmup: float = 0.0
    max_grad_norm: float | None = None


# Built-in backbones trained from scratch: what `lepton train` has used since it first trained digits.
SCRATCH = Recipe(epochs=10, lr=3e-3, batch_size=64, weight_decay=1e-4, schedule="cosine")
# A pretrained transformer: Hugging Face Trainer's way (lr in the 2e-5..1e-4 the field uses; at 3e-3 MiniLM
# forgot what it knew and answered the majority class).
TRANSFORMER = Recipe(
    epochs=3, lr=5e-5, batch_size=16, weight_decay=0.01, schedule="linear", warmup=0.1, max_grad_norm=1.0
)


def recipe_for(is_text: bool, **given: Any) -> Recipe:
    """Return the family's recipe (TRANSFORMER for text models, else SCRATCH) with the options given (those
    not None) in place of its defaults."""
    names = {f.name for f in fields(Recipe)}
    return replace(
        TRANSFORMER if is_text else SCRATCH,
        **{k: v for k, v in given.items() if k in names and v is not None},
    )
