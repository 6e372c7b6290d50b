"""How each model family trains unless told otherwise: a pretrained transformer is fine-tuned as the field
does it (AdamW at a small learning rate, linear warmup then decay, weight decay, gradient clipping), its LoRA
adapter at the larger learning rate adapters take, a head alone on frozen features like the logistic
regression it is; a convnet or an MLP trained from scratch keeps what works for it. An option the user gives
always wins."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lepton_ai.data import LabeledData

SCHEDULES = ("cosine", "linear", "onecycle", "none")
# What model selection can maximise on the validation split (loss is minimised).
SELECT_BY = ("f1_macro", "accuracy", "loss")


class TrainingNotice(UserWarning):
    """Something a user should know about a training that did not fail (it learned nothing useful, say)."""


@dataclass(frozen=True)
class Recipe:
    """The options of one training: epochs, learning rate, batch size, weight decay, schedule, the warmup's
    share of the steps (linear schedule), the gradient clipping norm (0 or None: no clipping), how many
    batches' gradients add up to one step and what picks the epoch kept."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    schedule: str
    warmup: float = 0.0
    max_grad_norm: float | None = None
    # batches whose gradients add up to one optimizer step
    grad_accum: int = 1
    # the validation figure that picks the kept epoch (None: macro-F1 for a classifier, else loss)
    select_by: str | None = None


# Built-in backbones trained from scratch: what `lepton train` has used since it first trained digits.
SCRATCH = Recipe(epochs=10, lr=3e-3, batch_size=64, weight_decay=1e-4, schedule="cosine")
# A pretrained transformer: Hugging Face Trainer's way (lr in the 2e-5..1e-4 the field uses; at 3e-3 MiniLM
# forgot what it knew and answered the majority class).
TRANSFORMER = Recipe(
    epochs=3, lr=5e-5, batch_size=16, weight_decay=0.01, schedule="linear", warmup=0.1, max_grad_norm=1.0
)
# A LoRA adapter: the transformer's recipe at an adapter's larger learning rate (PEFT's examples use 1e-4 to
# 3e-3), for longer: it starts from zero, and each of its epochs costs two thirds of a full one.
LORA = replace(TRANSFORMER, epochs=5, lr=2e-3)
# A classification head alone on frozen features: a logistic regression, trained by AdamW close to convergence
# (at least 1,000 steps: `lepton_ai.train.head`) and kept by its own objective (the validation loss; macro-F1
# on a small validation split is noisy).
HEAD = Recipe(epochs=100, lr=3e-3, batch_size=32, weight_decay=0.01, schedule="cosine", select_by="loss")
FAMILIES = {"scratch": SCRATCH, "transformer": TRANSFORMER, "lora": LORA, "head": HEAD}


def recipe_for(family: str, **given: Any) -> Recipe:
    """Return the family's recipe (scratch, transformer, lora or head) with the options given (those not None)
    in place of its defaults."""
    names = {f.name for f in fields(Recipe)}
    return replace(FAMILIES[family], **{k: v for k, v in given.items() if k in names and v is not None})


def say_if_it_learned_nothing(row: dict[str, float], val_data: LabeledData) -> None:
    """Warn when the kept model does no better on the validation split than always answering its most
    common class (its accuracy, or its macro-F1 within a point of that answer's): training ran, but nothing
    useful came of it."""
    majority = max(Counter(val_data.labels.tolist()).values(), default=0) / max(1, len(val_data))
    # the majority answer's F1 is 2p / (1 + p) on its class and 0 on the others
    majority_f1 = 2 * majority / (1 + majority) / max(1, val_data.num_classes)
    accuracy, f1 = row.get("val_accuracy"), row.get("val_f1_macro")
    # accuracy is averaged in float32: a hair over the share is still the share
    if accuracy is None or f1 is None or (accuracy > majority + 1e-4 and f1 > majority_f1 + 0.01):
        return
    warnings.warn(
        f"validation accuracy {accuracy:.3f} and macro-F1 {f1:.3f} are no better than always answering the "
        f"most common class ({majority:.3f} and {majority_f1:.3f}): the model learned nothing useful; try "
        "another learning rate (a pretrained transformer: 2e-5 to 1e-4) or more epochs",
        TrainingNotice,
        stacklevel=3,
    )
