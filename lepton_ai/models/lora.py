"""LoRA adapters (through PEFT) on a text encoder's attention layers: what to adapt, how to write the
adapter down (a few hundred kilobytes beside a model of tens of megabytes) and how to fold it back in."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from lepton_ai.errors import InvalidInputError, NotFoundError


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA adapter's shape: rank `r`, scaling `alpha` (the update is scaled by alpha / r), the dropout on
    its input, and the linear layers it adapts (None: PEFT's choice for the architecture, e.g. BERT's query
    and value projections)."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.1
    targets: tuple[str, ...] | None = None

    @classmethod
    def of(cls, spec: LoraSpec | str | dict[str, Any] | None) -> LoraSpec | None:
        """Return `spec` as a LoraSpec: as a dict, or as the CLI's "r=8,alpha=16,dropout=0.1"."""
        if spec is None or isinstance(spec, LoraSpec):
            return spec
        if isinstance(spec, str):
            spec = dict(_pair(part) for part in spec.split(",") if part.strip())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown LoRA option {unknown[0]!r}: give r, alpha, dropout (e.g. r=8,alpha=16,dropout=0.1)"
            )
        try:
            lora = cls(
                r=int(spec.get("r", cls.r)),
                alpha=float(spec.get("alpha", cls.alpha)),
                dropout=float(spec.get("dropout", cls.dropout)),
                targets=tuple(spec["targets"]) if spec.get("targets") else None,
            )
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"LoRA options are numbers, e.g. r=8,alpha=16,dropout=0.1 ({e})") from e
        if lora.r < 1 or lora.alpha <= 0 or not 0 <= lora.dropout < 1:
            raise InvalidInputError(
                f"LoRA needs r ≥ 1, alpha > 0 and dropout in [0, 1): got r={lora.r}, alpha={lora.alpha}, "
                f"dropout={lora.dropout}"
            )
        return lora

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as JSON-ready values."""
        out = asdict(self)
        out["targets"] = list(self.targets) if self.targets else None
        return out


def _pair(part: str) -> tuple[str, str]:
    key, sep, value = part.partition("=")
    if not sep:
        raise InvalidInputError(f"LoRA options are KEY=VALUE pairs, e.g. r=8,alpha=16: not {part.strip()!r}")
    return key.strip(), value.strip()


def _peft() -> Any:
    try:
        import peft
    except ImportError as e:
        raise NotFoundError("LoRA comes from the package peft: pip install 'lepton-ai[hf]'") from e
    return peft


def add_adapter(encoder: nn.Module, spec: LoraSpec) -> nn.Module:
    """Return `encoder` (a Hugging Face model) wrapped with a fresh LoRA adapter; only the adapter trains."""
    peft = _peft()
    model_type = getattr(getattr(encoder, "config", None), "model_type", None)
    targets = spec.targets or peft.utils.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not targets:
        raise InvalidInputError(
            f"PEFT does not know which layers of a {model_type!r} model to adapt: name them, e.g. "
            "targets=query,value in Python (LoraSpec(targets=(...)))"
        )
    config = peft.LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(targets), bias="none"
    )
    with warnings.catch_warnings():
        # transformers deprecates a name PEFT still reads; nothing for a user to act on
        warnings.simplefilter("ignore", FutureWarning)
        adapted: nn.Module = peft.get_peft_model(encoder, config)
    return adapted


def adapter_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Return the adapter's weights alone (what `load_adapter_state` puts back)."""
    state: dict[str, torch.Tensor] = _peft().get_peft_model_state_dict(encoder)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def load_adapter_state(encoder: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put adapter weights from `adapter_state` into an encoder that `add_adapter` wrapped."""
    result = _peft().set_peft_model_state_dict(encoder, state)
    stray = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if stray:
        raise InvalidInputError(f"the adapter's weights do not fit this model: {sorted(stray)[:3]}")


def merged(encoder: nn.Module) -> nn.Module:
    """Return the plain encoder with the adapter folded into its weights (as fast as the base to run)."""
    # a PEFT model, which nn.Module's type does not know
    peft_model: Any = encoder
    merged_model: nn.Module = peft_model.merge_and_unload()
    return merged_model
