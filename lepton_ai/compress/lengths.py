"""Length-aware batching for text models: a batch's sentences are sorted by length and run in groups, each
cut to its own longest, so that padding is not computed (sentence-transformers sorts by length for the same
reason). The answers are the model's own: padded positions are masked out of attention and pooling, and
right padding leaves every real token where it was."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# what a call costs beyond its tokens, counted in tokens: a group that saves less padding is not split off
CALL_TOKENS = 32


def groups(lengths: list[int], call_tokens: int = CALL_TOKENS) -> list[tuple[int, int]]:
    """Return the (start, end) spans cutting the ascending `lengths` into groups so that the tokens computed
    (each group's size × its longest) plus `call_tokens` a group are fewest."""
    n = len(lengths)
    cost, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):
            c = cost[start] + (end - start) * lengths[end - 1] + call_tokens
            if c < cost[end]:
                cost[end], cut[end] = c, start
    spans, end = [], n
    while end:
        spans.append((cut[end], end))
        end = cut[end]
    return spans[::-1]


def right_padded(mask: torch.Tensor) -> bool:
    """Return whether each row of an attention mask is its real tokens first, then padding only."""
    lengths = mask.sum(1, keepdim=True)
    return bool(torch.equal(mask.bool(), torch.arange(mask.shape[1]) < lengths))


class ByLength(nn.Module):
    """Runs a text model (PyTorch, ONNX Runtime) on a padded batch of token tensors in groups of similar
    length, each cut to its longest, and answers in the batch's order; anything else goes straight through."""

    def __init__(self, runnable: Any, call_tokens: int = CALL_TOKENS) -> None:
        super().__init__()
        self.runnable, self.call_tokens = runnable, call_tokens

    def __getattr__(self, name: str) -> Any:
        # what the model tells (is_text, num_classes), its file (path, for its size) and its text tools
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__.get("runnable") or self._modules["runnable"], name)

    def forward(self, x: Any) -> torch.Tensor:
        if isinstance(x, (list, tuple)) and x and all(isinstance(s, str) for s in x):
            x = self._tokens(list(x))
        if not isinstance(x, Mapping) or "attention_mask" not in x or not right_padded(x["attention_mask"]):
            return self.runnable(x)
        lengths = x["attention_mask"].sum(1)
        order = lengths.argsort(stable=True)
        ordered = lengths[order].tolist()
        parts = []
        for start, end in groups(ordered, self.call_tokens):
            rows, width = order[start:end], max(1, ordered[end - 1])
            parts.append(self.runnable({k: v[rows, :width] for k, v in x.items()}))
        out = torch.cat(parts)
        # back to the batch's order
        return out[order.argsort()]

    def _tokens(self, texts: list[str]) -> Any:
        """Return `texts` as the model tokenizes them (a LeptonModel, an ONNX model), else as they are."""
        tokenize = getattr(self.runnable, "tokenize", None)
        return texts if tokenize is None else tokenize(texts)
