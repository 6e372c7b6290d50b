from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy.aggregation import MECHANISM, ClientDP, aggregate, finite, parse_strategy
from lepton_ai.privacy.dp import epsilon_spent
from lepton_ai.privacy.federated import federated_train, local_train

pytest.importorskip("opacus")

# the trainable weights; "stat" is a running statistic, "steps" a counter
W = ["w"]


def vec(*values: float, stat: float = 0.0) -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor(values, dtype=torch.float32),
        "stat": torch.tensor([stat]),
        "steps": torch.tensor(7),
    }


def test_fedavg_weights_clients_by_their_examples() -> None:
    new = aggregate(
        parse_strategy("fedavg"), vec(0, 0), [(vec(1, 0, stat=1), 1), (vec(0, 4, stat=5), 3)], weights=W
    )
    # (1·1 + 3·0)/4, (1·0 + 3·4)/4
    assert torch.allclose(new["w"], torch.tensor([0.25, 3.0]))
    # statistics: the same weighted mean
    assert new["stat"].item() == pytest.approx(4.0)
    # counters are not averaged
    assert new["steps"].item() == 7
    assert torch.equal(
        aggregate(parse_strategy("fedavg"), vec(1, 2), [], weights=W)["w"], torch.tensor([1.0, 2.0])
    )


def test_server_optimisers_step_the_weights_only() -> None:
    plan = parse_strategy("fedavgm:0.5")
    first = aggregate(plan, vec(0, stat=1.0), [(vec(1, stat=0.2), 1)], weights=W)
    # update 1 + 0.5 · previous update 1
    second = aggregate(plan, first, [(vec(2, stat=0.1), 1)], weights=W)
    assert first["w"].item() == pytest.approx(1.0) and second["w"].item() == pytest.approx(2.5)
    # Momentum on a running variance would overshoot it below zero (and BatchNorm to NaN): it takes the mean.
    assert first["stat"].item() == pytest.approx(0.2) and second["stat"].item() == pytest.approx(0.1)
    # m = 0.1·u, v = 0.01·u², step = lr·m / (√v + τ)
    adam = parse_strategy("fedadam:0.01")
    stepped = aggregate(adam, vec(0), [(vec(2), 1)], weights=W)["w"].item()
    assert stepped == pytest.approx(0.01 * 0.2 / (0.2 + 1e-3), rel=1e-6)


def poisoned_round(spec: str) -> torch.Tensor:
    honest = [(vec(1.0 + 0.01 * i, -1.0), 10) for i in range(5)]
    return aggregate(parse_strategy(spec), vec(0, 0), [*honest, (vec(1e6, 1e6), 10)], weights=W)["w"]


def test_trimmed_mean_and_fedadam_withstand_a_poisoned_client() -> None:
    # one client drags the mean anywhere it likes
    assert poisoned_round("fedavg").abs().max() > 1e5
    # cuts one client at each end of every coordinate
    trimmed = poisoned_round("trimmed:0.2")
    assert torch.allclose(trimmed, torch.tensor([1.025, -1.0]), atol=1e-3)
    # Adam's step is bounded by ~lr whatever the update's size
    adam = poisoned_round("fedadam:0.01")
    assert adam.abs().max() < 0.1
    # 0.1 of 3 clients cuts none
    with pytest.warns(RuntimeWarning, match="too few to trim"):
        aggregate(parse_strategy("trimmed:0.1"), vec(0), [(vec(1), 1)] * 3, weights=W)


def test_tied_weights_are_stepped_and_statistics_trimmed_like_the_weights() -> None:
    from torch import nn

    from lepton_ai.privacy.aggregation import weight_keys

    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    # tied: one tensor under two names in the state dict
    net[1].weight = net[0].weight
    assert weight_keys(net) == ["0.weight", "1.weight"]
    start = {k: torch.zeros(2, 2) for k in ("0.weight", "1.weight")}
    client = {k: torch.ones(2, 2) for k in start}
    new = aggregate(parse_strategy("fedadam:0.1"), start, [(client, 1)], weights=weight_keys(net))
    # the name loaded last must carry the stepped value too
    net.load_state_dict(new)
    assert torch.allclose(net[0].weight, torch.full((2, 2), 0.1 * 0.1 / (0.1 + 1e-3)))
    honest = [(vec(1, stat=1.0 + 0.01 * i), 10) for i in range(5)]
    poisoned = aggregate(
        parse_strategy("trimmed:0.2"), vec(0), [*honest, (vec(1, stat=-1e6), 10_000)], weights=W
    )
    # a client cannot set a running statistic through the mean
    assert 1.0 <= poisoned["stat"].item() <= 1.05


def test_non_finite_updates_are_dropped_before_they_reach_the_model() -> None:
    results = [(vec(1, 1), 5), (vec(float("nan"), 1e6), 5), (vec(1, float("inf")), 5)]
    ok, dropped = finite(results)
    assert dropped == 2 and len(ok) == 1 and ok[0][0]["w"].tolist() == [1, 1]
    # clipping cannot tame a NaN: refuse it
    with pytest.raises(InvalidInputError, match="not finite"):
        ClientDP(noise_multiplier=1.0).combine(
            [torch.tensor([float("nan"), 1e6], dtype=torch.float64)], 1, torch.Generator(), dim=2
        )


def test_strategy_specs_and_bad_ones() -> None:
    assert parse_strategy("fedprox:0.1").mu == 0.1 and parse_strategy("fedprox").mu == 0.01
    assert parse_strategy("trimmed").trim == 0.1 and parse_strategy("fedadam:0.02").server_lr == 0.02
    for bad, message in [
        ("fedsgd", "unknown strategy"),
        ("fedprox:-1", "mu must be ≥ 0"),
        ("trimmed:0.5", r"in \(0, 0.5\)"),
        ("fedavgm:1", r"in \[0, 1\)"),
        ("fedprox:x", "not a number"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            parse_strategy(bad)


def test_fedprox_term_keeps_the_client_near_the_global_model() -> None:
    from lepton_ai.models import LeptonModel

    data = load("digits", "train").subset(np.arange(200))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = LeptonModel(num_classes=10, input_size=(1, 8, 8)).load_pretrained_model("mlp")
    start = {k: v.clone() for k, v in net.state_dict().items()}
    drift = {}
    for mu in (0.0, 1.0, 10.0):
        state, n, metrics = local_train(net, data, start, epochs=3, lr=0.05, mu=mu, seed=1)
        drift[mu] = sum(float((state[k] - start[k]).norm() ** 2) for k, _ in net.named_parameters()) ** 0.5
        assert n == 200 and metrics["train_loss"] > 0
    assert drift[10.0] < drift[1.0] < drift[0.0] and drift[10.0] < 0.7 * drift[0.0]


def test_client_dp_clips_each_update_and_adds_noise_to_the_sum() -> None:
    dp = ClientDP(noise_multiplier=1e-9, clip=1.0)
    # norms 5 (clipped to 1) and 0.5
    deltas = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)
    out = dp.combine(deltas, expected_clients=4, generator=torch.Generator().manual_seed(0), dim=2)
    assert torch.allclose(out, torch.tensor([0.6 + 0.3, 0.8 + 0.4], dtype=torch.float64) / 4)
    noisy = ClientDP(noise_multiplier=2.0, clip=0.5).combine(
        torch.zeros(3, 200_000, dtype=torch.float64), 10, torch.Generator().manual_seed(0), dim=200_000
    )
    # N(0, (σC)²) on the sum, over 10
    assert float(noisy.std()) == pytest.approx(2.0 * 0.5 / 10, rel=0.02)
    # e.g. the input standardisation's mean
    state = {"w": torch.zeros(4), "stat": torch.full((3,), 8.0)}
    client = {"w": torch.ones(4), "stat": torch.full((3,), 5.0)}
    new = aggregate(
        parse_strategy("fedavg"),
        state,
        [(client, 10)],
        weights=W,
        dp=ClientDP(noise_multiplier=1.0),
        expected_clients=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(new["stat"], state["stat"]) and not torch.equal(new["w"], torch.full((4,), 0.5))


def test_epsilon_from_the_rdp_accountant_matches_golden_values() -> None:
    # q = 1: the Gaussian mechanism's RDP is T·α/(2σ²); Opacus converts to ε with Balle et al. 2020, Thm 21.
    alphas = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=float)
    rdp = 10 * alphas / (2 * 2.0**2)
    closed_form = float(
        np.min(rdp - (np.log(1e-5) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas))
    )
    assert epsilon_spent(2.0, 1.0, 10, 1e-5) == pytest.approx(closed_form, rel=1e-9)
    assert epsilon_spent(2.0, 1.0, 10, 1e-5) == pytest.approx(8.079406222420491, rel=1e-9)
    # subsampled, opacus 1.6
    assert epsilon_spent(1.0, 0.1, 30, 1e-5) == pytest.approx(4.848039837634082, rel=1e-9)
    assert epsilon_spent(0.0, 0.1, 30, 1e-5) == math.inf
    dp = ClientDP(epsilon=8, delta=1e-5).calibrate(sample_rate=0.1, rounds=30)
    assert 0.5 < dp.noise_multiplier < 1.0 and 7.9 <= dp.epsilon_spent(0.1, 30) <= 8.0
    # a σ given with ε is checked against it...
    assert ClientDP(epsilon=8, noise_multiplier=dp.noise_multiplier).calibrate(0.1, 30).noise_multiplier == (
        dp.noise_multiplier
    )
    with pytest.raises(InvalidInputError, match="more than the epsilon 8 asked for"):
        # ...and refused when it spends more
        ClientDP(epsilon=8, noise_multiplier=0.3).calibrate(0.1, 30)


@pytest.mark.parametrize(
    ("dp", "message"),
    [
        ({"epsilon": 0}, "epsilon must be > 0"),
        ({"epsilon": -3}, "epsilon must be > 0"),
        ({"epsilon": 3, "delta": 1}, "delta must be between 0 and 1"),
        ({"epsilon": 3, "clip": 0}, "clip"),
        ({"epsilon": 3, "sigma": 1}, "unknown dp option"),
        ({"delta": 1e-5}, "needs an epsilon"),
        ({"noise_multiplier": 0}, "noise_multiplier must be > 0"),
        ({"epsilon": float("nan")}, "finite number"),
    ],
)
def test_bad_dp_is_one_line(dp: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as e:
        ClientDP.of(dp)
    assert "\n" not in str(e.value)


def test_bad_runs_fail_before_anything_is_registered() -> None:
    from lepton_ai.store import Registry

    for kwargs, message in [
        ({"clients": 5000}, "5000 clients but only 1257 examples"),
        ({"partition": "dirichlet:0"}, "alpha must be > 0"),
        ({"fraction": 0}, "fraction"),
        ({"strategy": "trimmed", "dp": {"epsilon": 3}}, "trimmed"),
        ({"model": "cnn-small", "data": "wine"}, "needs image inputs"),
        ({"model": "cnn-small", "dp": {"epsilon": 3}}, "without BatchNorm"),
        ({"schedule": "step"}, "schedule must be cosine or none"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            federated_train(**{"rounds": 1, **kwargs}, progress=False)
    assert Registry().list_models() == []


def test_a_short_simulation_registers_the_global_model_with_its_figures(tmp_path) -> None:
    from lepton_ai.store import Registry

    result = federated_train(
        "mlp",
        "digits",
        clients=4,
        rounds=3,
        partition="dirichlet:0.5",
        strategy="fedprox:0.01",
        name="fl-test",
        report_dir=tmp_path / "report",
        progress=False,
    )
    # chance is 0.1
    assert result.ref == "fl-test:1" and result.metrics["accuracy"] > 0.5
    assert [row["round"] for row in result.history] == [1, 2, 3] and all(
        r["clients"] == 4 for r in result.history
    )
    doc = result.to_json()
    assert doc == {
        "name": "fl-test",
        "version": 1,
        "metrics": {"accuracy": result.metrics["accuracy"], "loss": result.metrics["loss"]},
        "rounds": 3,
        "clients": 4,
        "privacy": None,
    }
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(report["rounds"]) == 3 and (tmp_path / "report" / "accuracy.png").stat().st_size > 1000
    info = Registry().get("fl-test:1")
    assert info.metrics["accuracy"] == result.metrics["accuracy"]
    assert info.recipe["federated"]["strategy"] == "fedprox:0.01"
    run = Registry().get_run(result.run_id)
    assert run.status == "completed"


def test_client_level_dp_simulation_reports_epsilon() -> None:
    from lepton_ai.store import Registry

    result = federated_train(
        data="digits",
        clients=20,
        rounds=3,
        fraction=0.5,
        dp={"epsilon": 8, "delta": 1e-5, "clip": 1.0},
        name="fl-dp",
        progress=False,
    )
    # the default under DP: cnn-small has BatchNorm
    assert result.model.arch == "mlp"
    p = result.to_json()["privacy"]
    assert set(p) == {"epsilon", "delta", "mechanism"} and p["mechanism"] == MECHANISM
    assert 7.5 < p["epsilon"] <= 8.0 and p["delta"] == 1e-5
    recorded = Registry().get(result.ref).recipe["privacy"]
    assert recorded["epsilon"] == p["epsilon"] and recorded["sample_rate"] == 0.5 and recorded["rounds"] == 3
    assert result.history[-1]["epsilon"] == pytest.approx(p["epsilon"])
    # Poisson sampling: about 10 a round
    assert sum(row["clients"] for row in result.history) > 0
    # pixels 0..16 → -1..1: set once, not noised by the rounds
    norm = result.model.net.normalize
    assert torch.equal(norm.mean, torch.full_like(norm.mean, 8.0)) and torch.equal(
        norm.std, torch.full_like(norm.std, 8.0)
    )


def test_cli_run_prints_one_json_document(capsys) -> None:
    from lepton_ai.cli.fl import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--model", "mlp", "--clients", "3", "--rounds", "2", "--name", "fl-cli", "--json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"name", "version", "metrics", "rounds", "clients", "privacy"}
    assert (doc["name"], doc["version"], doc["rounds"], doc["clients"], doc["privacy"]) == (
        "fl-cli",
        1,
        2,
        3,
        None,
    )
    assert set(doc["metrics"]) == {"accuracy", "loss"}


def test_cli_bad_input_is_one_line_and_exit_2(capsys) -> None:
    from lepton_ai.cli.fl import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--clients", "3", "--rounds", "1", "--partition", "dirichlet:-1"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "alpha must be > 0" in err and "\n" not in err
    with pytest.raises(SystemExit) as e:
        main(["run", "--clients", "3", "--rounds", "1", "--dp-epsilon", "0"])
    assert e.value.code == 2 and "epsilon must be > 0" in capsys.readouterr().err
    for args, message in (
        (["--partition", "shards:inf"], "must be a finite number"),
        (["--device", "cuda"], "no CUDA GPU is visible"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["run", "--clients", "3", "--rounds", "1", *args])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and message in err and "\n" not in err
