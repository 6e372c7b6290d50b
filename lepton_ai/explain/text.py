"""A text classifier's attributions to the tokens it read (Integrated Gradients through the embedding layer,
Captum's LayerIntegratedGradients), as coloured HTML (every token escaped) and as a PNG."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch

from lepton_ai.errors import InvalidInputError
from lepton_ai.explain.methods import check_targets


@dataclass(frozen=True)
class TokenAttribution:
    """One text's tokens, each with its attribution to the class explained."""

    tokens: list[str]
    scores: list[float]
    target: int


def explain_text(
    model: Any, texts: list[str], target: int | None = None, steps: int = 32
) -> list[TokenAttribution]:
    """Return each text's token attributions for `target` (its predicted class if None), by Integrated
    Gradients from a baseline of padding between the first and last special tokens."""
    net = model._text_net()
    if net.head is None:
        raise InvalidInputError("an embedding model has no class to explain: explain a text classifier")
    model.eval()
    return [_one(net, text, target, steps) for text in texts]


def _one(net: Any, text: str, target: int | None, steps: int) -> TokenAttribution:
    from captum.attr import LayerIntegratedGradients

    device = next(net.parameters()).device
    tokens = {k: v.to(device) for k, v in net.tokenize([text]).items()}
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    baseline = torch.full_like(ids, net.tokenizer.pad_token_id or 0)
    baseline[:, 0], baseline[:, -1] = ids[:, 0], ids[:, -1]
    extra = {k: v for k, v in tokens.items() if k not in ("input_ids", "attention_mask")}

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch = {k: v.expand(len(input_ids), -1) for k, v in extra.items()}
        return net({**batch, "input_ids": input_ids, "attention_mask": attention_mask})

    with torch.no_grad():
        chosen = int(net(tokens).argmax(-1)) if target is None else target
    check_targets([chosen], net.head.out_features)
    lig = LayerIntegratedGradients(forward, net.encoder.embeddings)
    attributions = lig.attribute(ids, baseline, target=chosen, additional_forward_args=(mask,), n_steps=steps)
    words = net.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return TokenAttribution(list(words), attributions.sum(-1)[0].detach().tolist(), chosen)


def token_html(explained: TokenAttribution) -> str:
    """Return the tokens as HTML spans shaded red (for the class) or blue (against it), each escaped."""
    bound = max((abs(s) for s in explained.scores), default=1.0) or 1.0
    spans = []
    for token, score in zip(explained.tokens, explained.scores):
        alpha = min(1.0, abs(score) / bound)
        colour = f"rgba(220,40,40,{alpha:.2f})" if score > 0 else f"rgba(40,80,220,{alpha:.2f})"
        spans.append(f'<span title="{score:.4f}" style="background:{colour}">{html.escape(token)}</span>')
    return " ".join(spans)


def token_png(explained: TokenAttribution, title: str = "") -> bytes:
    """Return a PNG of the tokens' attributions as signed bars, in reading order."""
    from lepton_ai.explain.pictures import feature_bars

    labels = [f"{i}: {t}" for i, t in enumerate(explained.tokens)]
    order = torch.tensor(explained.scores)
    return feature_bars(
        order, labels, top=min(20, len(labels)), title=title or f"tokens for class {explained.target}"
    )
