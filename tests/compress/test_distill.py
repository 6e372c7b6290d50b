from __future__ import annotations

import warnings

import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.compress import distill, distillation_loss, prune_structured
from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError


def test_loss_is_zero_only_when_student_matches_teacher_and_labels_agree() -> None:
    logits = torch.tensor([[8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    labels = torch.tensor([0, 1])
    same = distillation_loss(logits, logits, labels, temperature=1.0, alpha=1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits.flip(0), logits, labels, alpha=1.0)) > 1.0


def test_pruned_student_distilled_from_teacher() -> None:
    train, test = load("digits", "train"), load("digits", "test")
    torch.manual_seed(0)
    teacher = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher.load_pretrained_model("cnn-small")
    teacher.fit(train, epochs=5, progress=False)
    student = prune_structured(teacher, 0.5)
    history = distill(teacher, student, train, epochs=4, lr=2e-3, progress=False)
    assert len(history["epochs"]) == 4
    assert student.evaluate(test)["accuracy"] >= teacher.evaluate(test)["accuracy"] - 0.03
    with pytest.raises(InvalidInputError, match="temperature"):
        distill(teacher, student, train, temperature=0)
