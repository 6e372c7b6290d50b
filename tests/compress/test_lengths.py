from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lepton_ai.compress import load_runnable, optimize, save_runnable
from lepton_ai.compress.lengths import ByLength, groups, right_padded
from lepton_ai.data import load
from lepton_ai.models import LeptonModel
from tests.compress.conftest import embedder


def test_groups_cut_where_padding_saved_outweighs_a_call() -> None:
    assert groups([30] * 8) == [(0, 8)]
    assert groups([]) == []
    spans = groups([5, 6, 7, 100, 120], call_tokens=32)
    assert spans == [(0, 3), (3, 5)]
    # a call costs more than the padding saved: one group
    assert groups([10, 12], call_tokens=32) == [(0, 2)]
    lengths = sorted(torch.randint(1, 128, (40,), generator=torch.Generator().manual_seed(0)).tolist())
    spans = groups(lengths)
    assert spans[0][0] == 0 and spans[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    padded = sum((end - start) * lengths[end - 1] + 32 for start, end in spans)
    assert padded < len(lengths) * lengths[-1] + 32


def test_right_padded() -> None:
    assert right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))


class Spy:
    """A text model that notes the width of each batch it is given."""

    def __init__(self, model: LeptonModel) -> None:
        self.model, self.widths = model, []

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.model.tokenize(texts)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.widths.append(batch["input_ids"].shape[1])
        return self.model(batch)


def test_answers_as_the_model_does_in_the_batch_order(tiny_bert) -> None:
    model = embedder(tiny_bert)
    texts = list(load("python-docs", "test").texts[:24])
    x = model.net.tokenizer(texts, padding="max_length", max_length=96, truncation=True, return_tensors="pt")
    x = dict(x.data)
    spy = Spy(model)
    by_length = ByLength(spy)
    with torch.inference_mode():
        want, got = model(x), by_length(x)
    assert torch.allclose(got, want, atol=1e-5)
    # several calls, each cut to its own longest, none to the padded width
    longest = int(x["attention_mask"].sum(1).max())
    assert len(spy.widths) > 1 and max(spy.widths) == longest < 96
    # texts, as a server hands them over: tokenized as the model would, then run by length
    spy.widths.clear()
    with torch.inference_mode():
        assert torch.allclose(by_length(texts), model(texts), atol=1e-5)
    assert len(spy.widths) > 1 and max(spy.widths) == longest
    # left padding: run as given
    spy.widths.clear()
    with torch.inference_mode():
        by_length({k: v.flip(1) for k, v in x.items()})
    assert spy.widths == [96]
    assert ByLength(model).num_classes == 0 and ByLength(model).is_text


def test_search_tries_it_and_loading_applies_it_again(tiny_bert, tmp_path: Path) -> None:
    model = embedder(tiny_bert)
    sentences = load("python-docs", "test").subset(list(range(48)))
    result = optimize(
        model,
        sentences,
        batch_size=16,
        seq_len=128,
        techniques=("onnx", "by-length"),
        workdir=tmp_path,
        progress=False,
    )
    trials = {t.name: t for t in result.trials}
    eager = trials["eager by-length"]
    assert isinstance(eager.model, ByLength) and eager.recipe["batching"] == "by-length"
    assert eager.quality > 0.9999
    base = result.trials[0]
    # every candidate within the bar and not slower than the baseline, run by length too
    wrapped = {n.removesuffix(" by-length") for n in trials if n.endswith(" by-length")}
    assert wrapped - {"eager"} == {
        t.name
        for t in result.trials
        if not t.name.endswith("by-length")
        and t is not base
        and t.throughput_per_s >= base.throughput_per_s
        and base.quality - t.quality <= 0.01
    }
    onnx = trials["onnx-fp32"]
    recipe = {**onnx.recipe, "batching": "by-length"}
    saved = save_runnable(ByLength(onnx.model), onnx.source, recipe, tmp_path / "saved")
    again = load_runnable(saved)
    assert isinstance(again, ByLength)
    x = {k: v[:8] for k, v in _speed_inputs(model, sentences).items()}
    with torch.inference_mode():
        assert torch.allclose(again(x), model(x), atol=1e-4)
        # texts, tokenized by the ONNX model's own tokenizer
        texts = list(sentences.texts[:8])
        assert torch.allclose(again(texts), model(texts), atol=1e-4)


def _speed_inputs(model, data) -> dict[str, torch.Tensor]:
    tokens = model.net.tokenizer(list(data.texts), padding="max_length", max_length=128, truncation=True)
    return {k: torch.tensor(v) for k, v in tokens.items()}


@pytest.mark.parametrize("recipe", [{}, {"batching": "by-length"}])
def test_a_saved_eager_model_batches_as_its_recipe_says(tiny_bert, tmp_path: Path, recipe) -> None:
    model = embedder(tiny_bert)
    loaded = load_runnable(save_runnable(ByLength(model), model, recipe, tmp_path / "saved"))
    assert isinstance(loaded, ByLength) == bool(recipe)
