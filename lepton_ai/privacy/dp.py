"""Sample-level differential privacy for ordinary training: DP-SGD through Opacus.

`fit(..., dp=DPConfig(epsilon=3, delta=1e-5))` trains with DP-SGD (Abadi et al. 2016): every step
draws a Poisson sample of the training set (each example independently, with probability
batch_size / N, as Opacus's DPDataLoader does), clips each example's gradient to `max_grad_norm`,
adds Gaussian noise whose multiplier Opacus calibrates so that the planned epochs end at the target
ε, and Opacus's RDP accountant states the ε actually spent. `PrivateTraining` is that hook: it wraps
the model and optimizer before the loop and hands the loop each epoch's batches; the loop is the
same one as without privacy.

What the guarantee covers: the training split, at the level of single examples. The statistics of
the model's input standardisation are not taken from it (see `standardize`), the validation split
is used in the open (per-epoch figures, early stopping), and sampling and noise use torch's
seeded pseudo-random generators (Opacus's `secure_mode` is off), as usual for research use.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import nn

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import Normalizer
from lepton_ai.errors import InvalidInputError, one_line

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MECHANISM = "DP-SGD (Opacus, RDP accountant)"

DEFAULT_MAX_GRAD_NORM = 1.0
_FULL_HOOK = "Full backward hook is firing when gradients are computed with respect to module outputs"


class PrivacyNotice(UserWarning):
    """Something DP-SGD changed or chose for the user (a layer replaced, where statistics came from)."""


def check_budget(epsilon: float | None, delta: float, **positive: float | None) -> None:
    """Raise, in one line, unless ε (when given) and every other value given are finite numbers > 0 and 0 < δ
    < 1."""
    for key, value in {"epsilon": epsilon, "delta": delta, **positive}.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise InvalidInputError(f"dp {key} must be a finite number, got {value!r}")
    if epsilon is not None and epsilon <= 0:
        raise InvalidInputError(f"dp epsilon must be > 0 (the privacy budget), got {epsilon}")
    if not 0 < delta < 1:
        raise InvalidInputError(f"dp delta must be between 0 and 1 (exclusive), e.g. 1e-5, got {delta}")
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise InvalidInputError(f"dp {key} must be > 0, got {value}")


class FromMapping:
    """`of(value)` for a privacy config dataclass: the config itself, one built from a dict, or None."""

    EXAMPLE: ClassVar[str]

    @classmethod
    def of(cls, value: Any) -> Any:
        """Return `value` as this config: itself, one built from a dict such as EXAMPLE (None values take
        their defaults), or None for no privacy."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInputError(
                f"dp must be a {cls.__name__} or a dict such as {cls.EXAMPLE}, not {type(value).__name__}"
            )
        config_fields = fields(cast("type[DataclassInstance]", cls))
        names = [f.name for f in config_fields]
        unknown = set(value) - set(names)
        if unknown:
            raise InvalidInputError(
                f"unknown dp option(s) {', '.join(sorted(map(str, unknown)))}: use {', '.join(names)}"
            )
        given = {k: v for k, v in value.items() if v is not None}
        missing = [f.name for f in config_fields if f.default is MISSING and f.name not in given]
        if missing:
            raise InvalidInputError(
                f"dp needs {' and '.join('an ' + m for m in missing)}, e.g. {cls.EXAMPLE}"
            )
        return cls(**given)


@dataclass(frozen=True)
class DPConfig(FromMapping):
    """The privacy target of a training run: (ε, δ)-DP for each training example, and the norm
    each example's gradient is clipped to."""

    EXAMPLE: ClassVar[str] = "{'epsilon': 3, 'delta': 1e-5}"

    epsilon: float
    delta: float = 1e-5
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM

    def __post_init__(self) -> None:
        check_budget(self.epsilon, self.delta, max_grad_norm=self.max_grad_norm)

    def to_dict(self) -> dict[str, float]:
        """Return the config as JSON-ready data."""
        return asdict(self)


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Return ε after `steps` Gaussian steps of `noise_multiplier` at `sample_rate`, as Opacus's RDP
    accountant states it (infinite without noise)."""
    if noise_multiplier <= 0:
        return math.inf
    accountant = opacus("accountants").RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        # "optimal order is the largest alpha": a looser bound, still a bound
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))


def check_options(*, world_size: int, compile: bool, precision: str, max_grad_norm: float | None) -> None:
    """Raise, in one line, on the fit options DP-SGD does not support (yet)."""
    if world_size > 1:
        raise InvalidInputError(
            "DP-SGD with data-parallel training (--nproc/--nnodes > 1) is not supported yet: "
            "train privately in one process"
        )
    if compile:
        raise InvalidInputError(
            "DP-SGD does not support --compile (Opacus computes per-example gradients with "
            "hooks that torch.compile does not trace)"
        )
    if precision in ("fp16", "bf16"):
        raise InvalidInputError(
            f"DP-SGD trains in fp32, not {precision}: per-example gradients and their clipping "
            "need full precision; use precision 'auto' or 'fp32'"
        )
    if max_grad_norm:
        raise InvalidInputError(
            "with dp, give the clipping norm as dp max_grad_norm (per example), not fit's "
            "max_grad_norm (per batch)"
        )


def make_compatible(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Replace the layers of `model.net` that DP-SGD cannot train (BatchNorm mixes the examples of a batch,
    so one example's gradient depends on the others) with Opacus's `ModuleValidator.fix` (BatchNorm →
    GroupNorm); warn with a `PrivacyNotice` naming what was replaced; return the replacements, which a
    LeptonModel records (`replaced_modules`) so that it loads the same layers again. Raise when Opacus
    cannot make it private."""
    ModuleValidator = opacus("validators").ModuleValidator

    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module):
        raise InvalidInputError("no backbone yet: call load_pretrained_model() before training with dp")
    net.train()
    before = {name: type(m) for name, m in net.named_modules()}
    # whatever stops Opacus copying the model is the user's answer
    try:
        # a copy (through torch.save), with the layers replaced
        fixed = ModuleValidator.fix(net)
    except Exception as e:
        raise InvalidInputError(
            f"Opacus cannot make this model private: copying it for ModuleValidator.fix failed "
            f"({type(e).__name__}: {one_line(e)})"
        ) from e
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise InvalidInputError(
            f"Opacus cannot make this model ({getattr(model, 'arch', None) or type(net).__name__}) "
            f"private: {one_line(errors[0])}"
        )
    # Opacus's backward hooks forbid in-place ops on the outputs they watch
    for m in fixed.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    replaced = {
        name: m for name, m in fixed.named_modules() if name in before and type(m) is not before[name]
    }
    specs = {}
    for name, m in replaced.items():
        if not isinstance(m, nn.GroupNorm):
            raise InvalidInputError(
                f"Opacus replaced {name} ({before[name].__name__}) with {type(m).__name__}, "
                "which a saved Lepton model cannot record; only BatchNorm → GroupNorm is supported"
            )
        specs[name] = {
            "type": "GroupNorm",
            "num_groups": m.num_groups,
            "num_channels": m.num_channels,
            "affine": m.affine,
        }
    model.net = fixed
    if not replaced:
        return {}
    recorded = getattr(model, "replaced_modules", None)
    if isinstance(recorded, dict):
        recorded.update(specs)
    kinds = sorted({before[name].__name__ for name in replaced})
    warnings.warn(
        f"DP-SGD: replaced {len(replaced)} {'/'.join(kinds)} layer(s) with GroupNorm "
        "(Opacus ModuleValidator.fix): batch statistics would mix examples",
        PrivacyNotice,
        stacklevel=2,
    )
    return specs


def standardize(
    norm: Normalizer, train_data: LabeledData, val_data: LabeledData | None, *, spread: float = 4.0
) -> None:
    """Set a `Standardize` layer without looking at the private training data: from the value range the
    data declares (images: pixels 0..pixel_max map to -spread/2..spread/2, the same for every pixel —
    -2..2 by default, which beat -1..1, 0..1 and -4..4 under DP-SGD on digits), else from the validation
    split (with a `PrivacyNotice`: the guarantee does not cover it), else not at all."""
    pixel_max = train_data.meta.get("pixel_max")
    if pixel_max:
        with torch.no_grad():
            norm.mean.fill_(pixel_max / 2)
            norm.std.fill_(pixel_max / spread)
            norm.fitted.fill_(True)
        return
    if val_data is not None and val_data.features is not None and len(val_data) > 1:
        norm.fit(val_data.features[:20000])
        warnings.warn(
            f"input standardisation fitted on the validation split ({len(val_data)} examples), not on "
            "the private training data; the privacy guarantee covers the training data only",
            PrivacyNotice,
            stacklevel=2,
        )
        return
    # leave inputs as they are
    norm.fitted.fill_(True)
    warnings.warn(
        "inputs are not standardised (no value range known and no validation split): scale the "
        "features yourself for better accuracy",
        PrivacyNotice,
        stacklevel=2,
    )


class PrivateTraining:
    """The DP-SGD hook of `fit`: Opacus's PrivacyEngine (RDP accountant) wraps the model (per-example
    gradients) and the optimizer (clipping, noise calibrated to the target ε over `epochs`), and its
    Poisson-sampling data loader gives each epoch's batches of example indices."""

    def __init__(
        self,
        config: DPConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        examples: int,
        batch_size: int,
        epochs: int,
        seed: int = 0,
    ) -> None:
        PrivacyEngine = opacus().PrivacyEngine

        if batch_size > examples:
            raise InvalidInputError(
                f"batch_size {batch_size} is larger than the {examples} training examples"
            )
        self.config, self.seed, self.epochs = config, seed, epochs
        self.generator = torch.Generator().manual_seed(seed)
        # The loader gives example indices (0..N-1) and the loop gathers the examples, as it does without DP.
        indices = torch.utils.data.TensorDataset(torch.arange(examples))
        loader = torch.utils.data.DataLoader(indices, batch_size=batch_size, generator=self.generator)
        with warnings.catch_warnings():
            # "secure RNG turned off" and the like: the module docstring says so
            warnings.simplefilter("ignore")
            self.engine = PrivacyEngine(accountant="rdp")
            try:
                self.module, self.optimizer, self.loader = self.engine.make_private_with_epsilon(
                    module=model,
                    optimizer=optimizer,
                    data_loader=loader,
                    target_epsilon=config.epsilon,
                    target_delta=config.delta,
                    epochs=epochs,
                    max_grad_norm=config.max_grad_norm,
                    poisson_sampling=True,
                )
            except ValueError as e:
                raise InvalidInputError(
                    f"DP-SGD cannot reach ε={config.epsilon} at δ={config.delta} over {epochs} "
                    f"epochs of {examples} examples: {one_line(e)}"
                ) from e
            except NotImplementedError as e:
                # Opacus has no per-example gradient for some layer
                raise InvalidInputError(f"Opacus cannot make this model private: {one_line(e)}") from e
        # what the accountant uses (steps are int(1/q))
        self.sample_rate = float(self.loader.sample_rate)
        # Opacus's hooks on the first layer, whose inputs need no gradient, make torch warn at every backward
        # that the hook sees only the outputs' gradients: which is all Opacus uses. Silence that one message
        # until close().
        warnings.filterwarnings("ignore", message=_FULL_HOOK, category=UserWarning)
        self._filter = warnings.filters[0]

    @property
    def noise_multiplier(self) -> float:
        """Return σ: the noise's standard deviation over the clipping norm."""
        return float(self.optimizer.noise_multiplier)

    def steps_per_epoch(self) -> int:
        """Return the number of (Poisson-sampled) batches in one epoch."""
        return len(self.loader)

    def epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        """Return the index batches of `epoch`: each example in each batch with probability sample_rate
        (sizes vary, a batch may be empty), drawn from a generator seeded by (seed, epoch) so that a
        resumed run draws what the uninterrupted one would have."""
        self.generator.manual_seed(self.seed * 1000 + epoch)
        return [idx.reshape(-1) for (idx,) in self.loader]

    def epsilon(self) -> float:
        """Return the ε spent so far at the target δ, as the RDP accountant states it."""
        with warnings.catch_warnings():
            # "optimal order is the largest alpha": a looser bound, still a bound
            warnings.simplefilter("ignore")
            return float(self.engine.accountant.get_epsilon(delta=self.config.delta))

    def report(self) -> dict[str, Any]:
        """Return what a model version records about its privacy."""
        steps = sum(n for _, _, n in self.engine.accountant.history)
        return {
            "epsilon": self.epsilon(),
            "delta": self.config.delta,
            "mechanism": MECHANISM,
            "target_epsilon": self.config.epsilon,
            "max_grad_norm": self.config.max_grad_norm,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": steps,
            "sampling": "Poisson",
        }

    def state_dict(self) -> dict[str, Any]:
        """Return the accountant's state, for a checkpoint."""
        return {"accountant": self.engine.accountant.state_dict(), "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue the accounting of a checkpointed run; refuse a checkpoint of a run without DP."""
        if not state:
            raise InvalidInputError(
                "the checkpoint was written by training without dp: a private run cannot resume "
                "it (its steps were not accounted); start afresh without --resume"
            )
        if not math.isclose(state["noise_multiplier"], self.noise_multiplier, rel_tol=1e-9):
            raise InvalidInputError(
                "the checkpoint was written with other DP settings (noise multiplier "
                f"{state['noise_multiplier']:.4g}, now {self.noise_multiplier:.4g}): resume with "
                "the same epsilon, delta, epochs and batch size"
            )
        self.engine.accountant.load_state_dict(state["accountant"])

    def __enter__(self) -> PrivateTraining:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove Opacus's hooks and per-example gradients from the model, and the warning filter."""
        self.module._close()
        with contextlib.suppress(ValueError):
            # typeshed declares the filters a Sequence: they are the module's list
            cast("list[Any]", warnings.filters).remove(self._filter)


def describe(privacy: Mapping[str, Any]) -> str:
    """Return a recorded privacy block (ε spent, δ, mechanism…) as one line for people."""
    p = privacy
    line = f"(ε = {p['epsilon']:.3g}, δ = {p['delta']:.3g})-DP by {p.get('mechanism', MECHANISM)}"
    if "target_epsilon" in p:
        line += (
            f"; target ε {p['target_epsilon']:g}, noise multiplier {p['noise_multiplier']:.3g}, "
            f"per-example clipping norm {p['max_grad_norm']:g}"
        )
    return line


def opacus(module: str = "") -> Any:
    """Return Opacus (or its submodule `module`), or raise a one-line error naming the extra to install."""
    try:
        return importlib.import_module(f"opacus.{module}" if module else "opacus")
    except ImportError as e:
        raise InvalidInputError("differential privacy needs Opacus: pip install 'lepton-ai[privacy]'") from e
