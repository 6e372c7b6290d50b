"""A privacy audit: attack a trained model to measure what it leaks about who was in its training set.

`audit("digits-cnn:1", "digits")` runs two membership-inference attacks on a registered version, its members
being the training split it was trained on and its non-members the test split it never saw (as many of each):

- loss threshold (Yeom et al. 2018): members have lower loss; the score is the target's log p_y;
- LiRA (Carlini et al. 2022): K shadow models trained by the target's own recipe (the architecture and the
  options its training run recorded) on random halves of a pool (members and non-members), so that each
  example is IN half of them and OUT of the others; the target's logit-scaled confidence on the example is
  scored by the likelihood ratio of Gaussians fitted to its IN and OUT confidences (online). With one shadow
  model, or `offline=True`, the shadows train on halves of the examples not audited and LiRA's one-sided test
  against the OUT Gaussian alone scores it (offline).

Both give an ROC AUC and the true-positive rate at 1 % false positives, with bootstrap intervals over the
examples (`lepton_ai.privacy.membership`). A registered version's audit is stored with it (one transaction)
and shown by `lepton models show` and the dashboard beside its ε.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lepton_ai.data import LabeledData, load
from lepton_ai.errors import InvalidInputError
from lepton_ai.models import LeptonModel
from lepton_ai.privacy import membership
from lepton_ai.privacy.membership import AuditResult

SHADOW_MODELS = 4
KIND = "privacy_audit"
# Fewest members (and non-members) an audit scores: fewer give intervals too wide to say anything.
MIN_EXAMPLES = 20
# What a training run recorded that says what it trained on, not how: not passed on to the shadow models.
_NOT_FIT_OPTIONS = ("model", "data", "seed", "label_fraction", "world_size", "resume")


@dataclass(frozen=True)
class ShadowRecipe:
    """How the target was trained, for its shadow models to be trained the same way: the model it started
    from (an architecture, a Hugging Face directory or a registry ref), the options of `fit`, the seed that
    drew its data split, the share of training labels it used, and on what."""

    model: str
    fit_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    label_fraction: float | None = None
    # the data set it was trained on, as its run recorded it
    data: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe as JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class MembershipData:
    """The examples an audit tells apart: those the target trained on (members), those it never saw
    (non-members), and the validation split its recipe picks the kept epoch by (None: the last epoch)."""

    members: LabeledData
    non_members: LabeledData
    val: LabeledData | None = None


@dataclass(frozen=True)
class _Target:
    """What an audit attacks: the model, its members and non-members, its recipe, and what to call them."""

    model: LeptonModel
    data: MembershipData
    recipe: ShadowRecipe
    name: str
    ref: str | None = None
    epsilon: float | None = None


@dataclass(frozen=True)
class AuditOptions:
    """How an audit runs: shadow models, the variant, examples per side, the bootstrap, the seed."""

    shadow_models: int = SHADOW_MODELS
    # None: offline with one shadow model, online from two
    offline: bool | None = None
    # members (and as many non-members) scored at most; None: as many as the smaller side has
    examples: int | None = None
    resamples: int = 200
    seed: int = 0
    progress: bool = True


def audit(
    target: str | LeptonModel,
    data: str | MembershipData,
    *,
    recipe: ShadowRecipe | None = None,
    store: bool = True,
    **options: Any,
) -> AuditResult:
    """Attack `target` (a registered NAME[:VERSION], or a model with its `data` and `recipe` given) by loss
    threshold and LiRA; return the figures, stored with a registered version unless `store=False`.

    `options` are AuditOptions' fields: shadow_models (4), offline, examples, resamples (200), seed,
    progress."""
    opts = AuditOptions(**options)
    _check(opts)
    t0 = time.perf_counter()
    if isinstance(target, str):
        attacked = _registered(target, data)
    else:
        if not isinstance(data, MembershipData) or recipe is None:
            raise InvalidInputError(
                "a model object is audited with its data as MembershipData(members, non_members, val) and "
                "recipe=ShadowRecipe(model, fit_options) saying how it was trained"
            )
        dp = recipe.fit_options.get("dp")
        epsilon = dp.get("epsilon") if isinstance(dp, dict) else getattr(dp, "epsilon", None)
        attacked = _Target(target, data, recipe, data.members.name.split("[")[0], epsilon=epsilon)
    result = _attack(attacked, opts, t0)
    if attacked.ref is not None and store:
        from lepton_ai.store.reports import VersionReports

        VersionReports().add(attacked.ref, KIND, result.to_dict())
    return result


def _check(opts: AuditOptions) -> None:
    """Raise, in one line, on options out of range."""
    if isinstance(opts.shadow_models, bool) or opts.shadow_models < 1:
        raise InvalidInputError(f"--shadow-models must be at least 1, got {opts.shadow_models}")
    if opts.offline is False and opts.shadow_models < 2:
        raise InvalidInputError(
            "online LiRA needs at least 2 shadow models (each example IN one and OUT of another): give "
            "--shadow-models 2 or more, or run it offline"
        )
    if opts.examples is not None and opts.examples < MIN_EXAMPLES:
        raise InvalidInputError(f"--examples must be at least {MIN_EXAMPLES}, got {opts.examples}")
    if opts.resamples < 10:
        raise InvalidInputError(
            f"resamples must be at least 10 for a bootstrap interval, got {opts.resamples}"
        )


def recipe_of(ref: str) -> ShadowRecipe:
    """Return how, and on what, the registered version `ref` was trained, from its training run; raise, saying
    what to do, when shadow models cannot be trained the same way."""
    from lepton_ai.store import Registry

    registry = Registry()
    info = registry.get(ref)
    own_api = (
        "or audit the model from Python with lepton_ai.privacy.audit.audit(model, MembershipData(...), "
        "recipe=ShadowRecipe(...)) saying how it was trained"
    )
    if info.run_id is None:
        raise InvalidInputError(
            f"{info.ref} has no training run in the registry (registered by hand?), so its shadow models "
            f"cannot be trained by its recipe: audit a version `lepton train` registered, {own_api}"
        )
    run = registry.get_run(info.run_id)
    if run.kind != "train" or "model" not in run.params or "data" not in run.params:
        made = f"a {run.kind} run" + (f" from {info.parent}" if info.parent else "")
        which = f" ({info.parent} or an ancestor)" if info.parent else ""
        raise InvalidInputError(
            f"{info.ref} was made by {made}, which shadow models cannot repeat: audit the version "
            f"`lepton train` registered{which}, {own_api}"
        )
    p = run.params
    options = {k: v for k, v in p.items() if k not in _NOT_FIT_OPTIONS}
    return ShadowRecipe(
        str(p["model"]), options, int(p.get("seed", 0)), p.get("label_fraction"), str(p["data"])
    )


def _registered(ref: str, data: str | MembershipData) -> _Target:
    """Return a registered version as an audit attacks it: its members are the training split it was trained
    on, its non-members the test split."""
    from lepton_ai.store import Registry

    if not isinstance(data, str):
        raise InvalidInputError(
            f"{ref} is audited on the data it was trained on: give its name (e.g. digits), not examples"
        )
    info = Registry().get(ref)
    recipe = recipe_of(info.ref)
    trained_on = str(recipe.data)
    if not _same_data(trained_on, data):
        raise InvalidInputError(
            f"{info.ref} was trained on {trained_on}, not {data}: its members are the training split of "
            f"{trained_on}; audit it with --data {trained_on}"
        )
    model = LeptonModel.load(info.ref)
    splits = {s: load(trained_on, s, seed=recipe.seed) for s in ("train", "val", "test")}
    members = splits["train"]
    if recipe.label_fraction is not None:
        members = members.labelled_share(recipe.label_fraction, recipe.seed)
    privacy = (info.recipe or {}).get("privacy") or {}
    membership_data = MembershipData(members, splits["test"], splits["val"])
    return _Target(model, membership_data, recipe, data, info.ref, privacy.get("epsilon"))


def _same_data(recorded: str, given: str) -> bool:
    """Return whether `given` names the data a run recorded (a dataset's name names its recorded version)."""
    if given == recorded or recorded.partition(":")[0] == given:
        return True
    return Path(recorded).expanduser().exists() and Path(recorded).resolve() == Path(given).resolve()


@dataclass(frozen=True)
class _Audited:
    """The examples an audit scores, drawn from the pool (members first, then non-members)."""

    pool: LabeledData
    # positions in the pool of the scored examples, and which of them are members
    index: np.ndarray
    member: np.ndarray


def _draw(data: MembershipData, limit: int | None, offline: bool, rng: np.random.Generator) -> _Audited:
    """Return as many members as non-members of each class (at most `limit` of each side), drawn at random;
    offline, at most half of the smaller side, the rest being what the shadow models train on."""
    m, n = len(data.members), len(data.non_members)
    most = min(m, n) // 2 if offline else min(m, n)
    non_members = rng.choice(n, min(most, limit or most), replace=False)
    inside, outside = data.members.labels.numpy(), data.non_members.labels.numpy()[non_members]
    chosen: list[np.ndarray] = []
    # the same classes on both sides: a class easier than the others does not pass for membership
    for label in np.unique(outside):
        same = np.flatnonzero(inside == label)
        k = min(len(same), int((outside == label).sum()))
        chosen += [rng.choice(same, k, replace=False), m + non_members[outside == label][:k]]
    index = np.sort(np.concatenate(chosen))
    if len(index) < 2 * MIN_EXAMPLES:
        raise InvalidInputError(
            f"an audit needs at least {MIN_EXAMPLES} members and as many non-members of their classes"
            f"{' (offline, twice as many: half train the shadow models)' if offline else ''}; the data has "
            f"{m} training and {n} held-out examples"
        )
    return _Audited(LabeledData.joined([data.members, data.non_members]), index, index < m)


def _attack(target: _Target, opts: AuditOptions, t0: float) -> AuditResult:
    """Score the drawn examples by both attacks and return the figures."""
    from lepton_ai.data.inputs import check_data

    for part in (target.data.members, target.data.non_members):
        check_data(target.model, part)
    rng = np.random.default_rng(opts.seed)
    offline = opts.offline if opts.offline is not None else opts.shadow_models < 2
    audited = _draw(target.data, opts.examples, offline, rng)
    scored = audited.pool.subset(audited.index)
    labels = scored.labels.numpy()
    logits = target.model.logits(scored).double().numpy()
    shadows, shadow_member = _shadows(target.recipe, target.data.val, audited, opts, offline, rng)
    lira = membership.lira_scores(
        membership.logit_confidence(logits, labels), shadows, shadow_member, offline
    )
    bootstrap = {"resamples": opts.resamples, "seed": opts.seed}
    correct = logits.argmax(1) == labels
    return AuditResult(
        ref=target.ref,
        data=target.name,
        members=int(audited.member.sum()),
        non_members=int((~audited.member).sum()),
        shadow_models=opts.shadow_models,
        variant="offline" if offline else "online",
        loss=membership.figures(membership.log_likelihood(logits, labels), audited.member, **bootstrap),
        lira=membership.figures(lira, audited.member, **bootstrap),
        member_accuracy=float(correct[audited.member].mean()),
        non_member_accuracy=float(correct[~audited.member].mean()),
        resamples=opts.resamples,
        seconds=time.perf_counter() - t0,
        epsilon=target.epsilon,
        recipe=target.recipe.to_dict(),
    )


def _shadows(
    recipe: ShadowRecipe,
    val: LabeledData | None,
    audited: _Audited,
    opts: AuditOptions,
    offline: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Train the shadow models; return each one's φ on the audited examples and whether it trained on them
    (both K × examples). Online they train on halves of the pool, offline on halves of what is not audited."""
    if offline:
        rest = np.setdiff1d(np.arange(len(audited.pool)), audited.index)
        source, positions = audited.pool.subset(rest), None
    else:
        source, positions = audited.pool, audited.index
    keep = membership.balanced_halves(opts.shadow_models, len(source), rng)
    scored = audited.pool.subset(audited.index)
    labels = scored.labels.numpy()
    phi = np.empty((opts.shadow_models, len(audited.index)))
    with _bar(opts.progress) as bar:
        task = bar.add_task(f"{opts.shadow_models} shadow models ({recipe.model})", total=opts.shadow_models)
        for k in range(opts.shadow_models):
            shadow = _train(recipe, source.subset(np.flatnonzero(keep[k])), val, opts.seed * 1000 + k + 1)
            phi[k] = membership.logit_confidence(shadow.logits(scored).double().numpy(), labels)
            bar.advance(task)
    member = keep[:, positions] if positions is not None else np.zeros_like(phi, dtype=bool)
    return phi, member


def _train(recipe: ShadowRecipe, train: LabeledData, val: LabeledData | None, seed: int) -> LeptonModel:
    """Return a shadow model trained on `train` by the target's recipe."""
    from lepton_ai.train.job import new_model

    options = {**recipe.fit_options, "progress": False}
    net = new_model(recipe.model, train, seed, lora=options.get("lora") is not None)
    with warnings.catch_warnings():
        # the target's training said these once (DP notices, a class the split lacks)
        warnings.simplefilter("ignore")
        net.fit(train, val, seed=seed, **options)
    return net


def _bar(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
    )
