"""The privacy audit: membership inference by loss threshold and LiRA tells an overfit model's members from
non-members, finds nothing where the "members" were never seen, states its figures with well-formed bootstrap
intervals, is stored with a registered version, and refuses bad input in one line; the benchmark's case
renders what it recorded."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lepton_ai.data import LabeledData, load
from lepton_ai.errors import InvalidInputError
from lepton_ai.models import LeptonModel
from lepton_ai.privacy import membership
from lepton_ai.privacy.audit import MembershipData, ShadowRecipe, audit, recipe_of
from lepton_ai.store import Registry
from lepton_ai.store.reports import VersionReports
from lepton_ai.train.job import new_model, train_and_register

# Few examples and many epochs: an mlp that learns its 100 training digits by heart.
RECIPE = ShadowRecipe("mlp", {"epochs": 30, "device": "cpu"})
EXAMPLES = 100


@dataclass(frozen=True)
class Overfit:
    """An mlp trained on `members` alone, the test digits it never saw, and digits of the training split it
    never saw either."""

    model: LeptonModel
    members: LabeledData
    non_members: LabeledData
    unseen: LabeledData


@pytest.fixture(scope="module")
def overfit() -> Overfit:
    train, test = load("digits", "train"), load("digits", "test")
    rng = np.random.default_rng(0)
    order, held_out = rng.permutation(len(train)), rng.permutation(len(test))
    members = train.subset(order[:EXAMPLES])
    model = new_model("mlp", members, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(members, progress=False, **RECIPE.fit_options)
    return Overfit(
        model, members, test.subset(held_out[:EXAMPLES]), train.subset(order[EXAMPLES : 2 * EXAMPLES])
    )


def test_an_overfit_model_gives_its_members_away(overfit: Overfit) -> None:
    data = MembershipData(overfit.members, overfit.non_members)
    result = audit(overfit.model, data, recipe=RECIPE, shadow_models=4, progress=False)
    # as many of each class on both sides: 100 random digits of each side share 86 of their class labels
    assert result.members == result.non_members == 86 and result.variant == "online"
    assert result.member_accuracy == 1.0 and result.non_member_accuracy < 0.95
    # clearly above chance, the whole interval
    assert result.lira.auc > 0.65 and result.lira.auc_ci.low > 0.55
    assert result.loss.auc > 0.55 and result.loss.auc_ci.low > 0.5
    # LiRA calibrates each example by its shadows: at 1 % false positives it finds members the loss misses
    assert result.lira.tpr > result.loss.tpr and result.lira.tpr_ci.low > 0.01
    for f in (result.lira, result.loss):
        assert 0 <= f.tpr_ci.low <= f.tpr <= f.tpr_ci.high <= 1
        assert f.auc_ci.low <= f.auc <= f.auc_ci.high and f.auc_ci.high - f.auc_ci.low < 0.25
    assert membership.AuditResult.from_dict(result.to_dict()) == result


def test_members_it_never_saw_are_not_told_apart(overfit: Overfit) -> None:
    data = MembershipData(overfit.unseen, overfit.non_members)
    result = audit(overfit.model, data, recipe=RECIPE, shadow_models=4, progress=False)
    for f in (result.lira, result.loss):
        assert f.auc_ci.covers(0.5) and abs(f.auc - 0.5) < 0.1
        assert f.tpr_ci.low <= 0.05


def test_offline_lira_trains_its_shadows_on_what_it_does_not_attack(overfit: Overfit) -> None:
    data = MembershipData(overfit.members, overfit.non_members)
    one = audit(overfit.model, data, recipe=RECIPE, shadow_models=1, progress=False)
    # at most half of each side is attacked, the rest trains the shadow model
    assert one.variant == "offline" and one.members == one.non_members <= EXAMPLES // 2
    four = audit(overfit.model, data, recipe=RECIPE, shadow_models=4, offline=True, progress=False)
    assert four.variant == "offline" and four.lira.auc_ci.low > 0.5


def test_bad_options_are_refused(overfit: Overfit) -> None:
    data = MembershipData(overfit.members, overfit.non_members)
    cases = [
        ({"shadow_models": 0}, "--shadow-models must be at least 1"),
        ({"shadow_models": 1, "offline": False}, "online LiRA needs at least 2 shadow models"),
        ({"examples": 5}, "--examples must be at least"),
        ({"resamples": 1}, "resamples must be at least"),
    ]
    for options, says in cases:
        with pytest.raises(InvalidInputError, match=says):
            audit(overfit.model, data, recipe=RECIPE, progress=False, **options)
    with pytest.raises(InvalidInputError, match="recipe=ShadowRecipe"):
        audit(overfit.model, data)
    iris = MembershipData(load("iris", "train"), load("iris", "test"))
    with pytest.raises(InvalidInputError, match="the data has 3 classes"):
        audit(overfit.model, iris, recipe=RECIPE, progress=False)
    few = MembershipData(overfit.members.subset(np.arange(10)), overfit.non_members)
    with pytest.raises(InvalidInputError, match="at least 20 members"):
        audit(overfit.model, few, recipe=RECIPE, progress=False)


def test_a_registered_version_is_audited_by_its_recipe_and_the_audit_stored(tmp_path: Path) -> None:
    trained = train_and_register("mlp", "digits", "dg", epochs=3, device="cpu", progress=False, seed=2)
    recipe = recipe_of("dg")
    assert (recipe.model, recipe.data, recipe.seed, recipe.fit_options["epochs"]) == ("mlp", "digits", 2, 3)
    result = audit("dg", "digits", shadow_models=2, examples=60, progress=False)
    assert result.ref == trained.ref == "dg:1" and result.members == result.non_members == 60
    stored = VersionReports().latest("dg:1", "privacy_audit")
    assert stored is not None and stored.report == result.to_dict()
    # not what it was trained on; a version no training run made
    with pytest.raises(InvalidInputError, match="was trained on digits, not iris"):
        audit("dg", "iris", progress=False)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not a model")
    Registry().register("by-hand", weights)
    with pytest.raises(InvalidInputError, match="no training run in the registry"):
        audit("by-hand", "digits", progress=False)


def test_the_statistics_against_independent_computations() -> None:
    rng = np.random.default_rng(1)
    # ties included: scores rounded to one decimal
    scores, member = np.round(rng.normal(size=400), 1), rng.uniform(size=400) < 0.5
    assert membership.auc(scores, member) == pytest.approx(roc_auc_score(member, scores))
    # 100 non-members 0..99, members at 98.5 and 50: one false positive in 100 allowed flags the first only
    negatives, positives = np.arange(100.0), np.array([98.5, 50.0])
    both, is_member = np.r_[positives, negatives], np.r_[[True, True], np.zeros(100, dtype=bool)]
    assert membership.tpr_at(both, is_member, 0.01) == 0.5
    logits = rng.normal(size=(50, 4)) * 5
    labels = rng.integers(0, 4, 50)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p_y = p[np.arange(50), labels]
    assert np.allclose(membership.logit_confidence(logits, labels), np.log(p_y / (1 - p_y)))
    assert np.allclose(membership.log_likelihood(logits, labels), np.log(p_y))
    keep = membership.balanced_halves(6, 1000, rng)
    assert (keep.sum(0) == 3).all() and abs(keep.sum(1) - 500).max() < 60
    odd = membership.balanced_halves(5, 1000, rng).sum(0)
    assert set(odd) == {2, 3}


def test_lira_finds_members_whose_confidence_matches_their_in_models() -> None:
    rng = np.random.default_rng(2)
    # 200 examples of their own difficulty; IN models are 2 logits more confident than OUT ones
    difficulty = rng.normal(0, 3, 200)
    member_of_shadow = membership.balanced_halves(8, 200, rng)
    shadows = difficulty + 2.0 * member_of_shadow + rng.normal(0, 0.5, (8, 200))
    member = rng.uniform(size=200) < 0.5
    target = difficulty + 2.0 * member + rng.normal(0, 0.5, 200)
    online = membership.lira_scores(target, shadows, member_of_shadow, offline=False)
    offline = membership.lira_scores(target, shadows, member_of_shadow, offline=True)
    # the raw confidence is swamped by the examples' difficulty; the per-example calibration is not
    assert membership.auc(target, member) < 0.75 < 0.95 < membership.auc(online, member)
    assert membership.auc(offline, member) > 0.9


def test_the_benchmark_case_renders_its_recorded_figures(benchmark_script: Any, tmp_path: Path) -> None:
    privacy = benchmark_script("privacy")
    _, table, plot = privacy.CASES["audit"]
    section = json.loads((privacy.RESULTS / "privacy.json").read_text())["cases"]["audit"]
    assert table(section).row_count == 3 and section["verdict"]["worst_auc"] <= 0.55
    plot(section, tmp_path / "audit.png")
    assert (tmp_path / "audit.png").read_bytes().startswith(b"\x89PNG")
