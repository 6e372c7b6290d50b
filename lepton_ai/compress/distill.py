"""Knowledge distillation: a student learns the teacher's softened outputs and the labels."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lepton_ai.errors import InvalidInputError


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Return alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE(student, labels) (Hinton et al. 2015)."""
    soft = (
        nn.functional.kl_div(
            nn.functional.log_softmax(student_logits / temperature, -1),
            nn.functional.log_softmax(teacher_logits / temperature, -1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )
    return alpha * soft + (1 - alpha) * nn.functional.cross_entropy(student_logits, labels)


def embedding_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Return mean (1 − cosine) + MSE between student and teacher embeddings."""
    cosine = nn.functional.cosine_similarity(student, teacher, dim=-1)
    return (1 - cosine).mean() + nn.functional.mse_loss(student, teacher)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_data: Any,
    val_data: Any = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.7,
    **fit_options: Any,
) -> dict[str, Any]:
    """Train `student` (e.g. a pruned copy of `teacher`) to match `teacher`; return fit's history.
    Classifiers learn softened logits and labels; embedding models the teacher's embeddings."""
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise InvalidInputError(f"need temperature > 0 and 0 ≤ alpha ≤ 1, got {temperature} and {alpha}")
    if getattr(teacher, "num_classes", None) != getattr(student, "num_classes", None):
        raise InvalidInputError(f"teacher has {teacher.num_classes} classes, student {student.num_classes}")
    from lepton_ai.device import resolve_device
    from lepton_ai.train.loop import fit

    teacher = teacher.to(resolve_device(fit_options.get("device", "auto"))).eval()

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(inputs).float()
        if getattr(student, "is_embedding", False):
            return embedding_distillation_loss(logits, target)
        return distillation_loss(logits, target, labels, temperature, alpha)

    return fit(student, train_data, val_data, loss_fn=loss_fn, **fit_options)
