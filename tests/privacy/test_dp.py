"""Sample-level differential privacy: DP-SGD through Opacus in `fit`, `lepton train --dp-epsilon` and
`lepton models show`, and the RDP accounting checked against values computed here independently."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("opacus")

from opacus.accountants import RDPAccountant  # noqa: E402
from opacus.accountants.analysis.rdp import compute_rdp  # noqa: E402

from lepton_ai import LeptonModel  # noqa: E402
from lepton_ai.data import load  # noqa: E402
from lepton_ai.errors import InvalidInputError  # noqa: E402
from lepton_ai.privacy import MECHANISM, DPConfig, PrivacyNotice  # noqa: E402
from lepton_ai.privacy.dp import PrivateTraining, epsilon_spent  # noqa: E402


def lepton_proc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args], capture_output=True, text=True
    )


def rdp_to_dp(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    """(ε, δ)-DP from RDP curves: Balle et al. 2020, "Hypothesis testing interpretations and Rényi
    differential privacy", Theorem 21 (arXiv:1905.09982) — the conversion Opacus's RDP accountant uses:
    ε = min_α  rdp(α) + log((α-1)/α) - (log δ + log α) / (α-1)."""
    return float(
        np.min(rdp + np.log((orders - 1) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1))
    )


# -- the accountant against values computed independently ------------------------------------------


@pytest.mark.parametrize("sigma, steps, delta", [(1.0, 1, 1e-5), (4.0, 100, 1e-5), (2.0, 1000, 1e-6)])
def test_rdp_of_the_full_batch_gaussian_mechanism_is_its_closed_form(
    sigma: float, steps: int, delta: float
) -> None:
    # With sample rate 1 DP-SGD is the Gaussian mechanism of sensitivity 1 composed `steps` times; its RDP
    # is exactly steps * α / (2σ²) (Mironov 2017, "Rényi Differential Privacy", Proposition 7 and 1).
    orders = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=float)
    closed_form = steps * orders / (2 * sigma**2)
    np.testing.assert_allclose(
        compute_rdp(q=1.0, noise_multiplier=sigma, steps=steps, orders=orders), closed_form, rtol=1e-12
    )
    # what lepton reports, through Opacus's accountant
    eps = epsilon_spent(sigma, 1.0, steps, delta)
    assert eps == pytest.approx(rdp_to_dp(orders, closed_form, delta), rel=1e-9) and eps > 0


def sampled_gaussian_rdp(q: float, sigma: float, alpha: int) -> float:
    """RDP at integer order α of the Poisson-subsampled Gaussian mechanism, from its closed form (Mironov,
    Talwar and Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", Section 3.3):
    log( Σ_k C(α,k) (1-q)^(α-k) q^k exp((k²-k)/(2σ²)) ) / (α-1), summed in log space."""
    terms = [
        math.log(math.comb(alpha, k))
        + (alpha - k) * math.log1p(-q)
        + k * math.log(q)
        + (k * k - k) / (2 * sigma**2)
        for k in range(alpha + 1)
    ]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def test_rdp_of_dp_sgd_matches_the_sampled_gaussian_closed_form() -> None:
    # The DP-SGD setting of Abadi et al. 2016 (MNIST): q = 256/60000, σ = 1.1, 60 epochs, δ = 1e-5.
    q, sigma, delta = 256 / 60000, 1.1, 1e-5
    steps = int(60 / q)
    orders = np.arange(2, 65)
    ours = np.array([steps * sampled_gaussian_rdp(q, sigma, int(a)) for a in orders])
    np.testing.assert_allclose(
        compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders.astype(float)), ours, rtol=1e-6
    )
    accountant = RDPAccountant()
    accountant.history = [(sigma, q, steps)]
    eps = accountant.get_epsilon(delta=delta, alphas=[float(a) for a in orders])
    assert eps == pytest.approx(rdp_to_dp(orders.astype(float), ours, delta), rel=1e-6)
    # the paper's moments accountant gave ε ≈ 2 for this run (a looser conversion)
    assert 1.0 < eps < 3.0


# -- the DP-SGD hook --------------------------------------------------------------------------------


def test_make_private_with_epsilon_reaches_at_most_the_target() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(300, 5), torch.randint(0, 2, (300,))
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = DPConfig(epsilon=2.0, delta=1e-5, max_grad_norm=0.5)
    private = PrivateTraining(config, model, optimizer, examples=300, batch_size=50, epochs=3, seed=1)
    assert private.noise_multiplier > 0 and private.sample_rate == pytest.approx(1 / 6)
    sizes = []
    for epoch in range(3):
        batches = private.epoch_batches(epoch)
        assert len(batches) == private.steps_per_epoch() == 6
        for idx in batches:
            sizes.append(len(idx))
            loss = nn.functional.cross_entropy(private.module(x[idx]), y[idx])
            private.optimizer.zero_grad()
            loss.backward()
            private.optimizer.step()
    # Poisson sampling: sizes vary around 50
    assert len(set(sizes)) > 1 and abs(np.mean(sizes) - 50) < 15
    # seeded
    assert [len(b) for b in private.epoch_batches(1)] == [len(b) for b in private.epoch_batches(1)]
    report = private.report()
    assert report["steps"] == 18 and report["mechanism"] == MECHANISM
    assert 0.8 * config.epsilon < report["epsilon"] <= config.epsilon
    private.close()
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epsilon": 0}, "epsilon must be > 0"),
        ({"epsilon": -1}, "epsilon must be > 0"),
        ({"epsilon": 3, "delta": 0}, "delta must be between 0 and 1"),
        ({"epsilon": 3, "delta": 1}, "delta must be between 0 and 1"),
        ({"epsilon": 3, "max_grad_norm": 0}, "max_grad_norm"),
        ({"epsilon": float("nan")}, "finite"),
        ({"delta": 1e-5}, "needs an epsilon"),
        ({"epsilon": 3, "sigma": 1}, "unknown dp option"),
    ],
)
def test_bad_dp_config_is_refused(options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        DPConfig.of(options)


def digits_subset(n: int = 300):
    train, val = load("digits", "train"), load("digits", "val")
    return train.subset(np.arange(n)), val


def digits_net(arch: str = "mlp") -> LeptonModel:
    """A fresh, untrained `arch` for digits (random weights on purpose: no warning)."""
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.load_pretrained_model(arch)


def test_batchnorm_is_replaced_with_a_notice_and_the_model_saves_and_loads(lepton_home: Path) -> None:
    train, val = digits_subset()
    model = digits_net("cnn-small")
    with pytest.warns(PrivacyNotice, match=r"replaced 4 BatchNorm2d layer\(s\) with GroupNorm"):
        history = model.fit(
            train, val, epochs=1, batch_size=100, lr=1e-2, dp={"epsilon": 8}, progress=False, device="cpu"
        )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 4
    assert history["privacy"]["epsilon"] <= 8 and history["precision"] == "fp32"
    ref = model.save("dp-cnn", recipe={"privacy": history["privacy"]})
    loaded = LeptonModel.load(ref)
    assert sum(isinstance(m, nn.GroupNorm) for m in loaded.modules()) == 4
    test = load("digits", "test")
    assert torch.equal(loaded.predict(test), model.predict(test))


class Counting(nn.Module):
    """A trainable layer that keeps a buffer: Opacus refuses it (the buffer's state would escape clipping)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(64))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * self.weight


def test_a_model_opacus_cannot_make_private_is_one_error() -> None:
    train, val = digits_subset(100)
    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    model.net = nn.Sequential(Counting(), nn.Linear(64, 10))
    with pytest.raises(InvalidInputError, match="Opacus cannot make this model private") as info:
        model.fit(train, val, epochs=1, dp=DPConfig(epsilon=3), progress=False, device="cpu")
    assert "\n" not in str(info.value)


def test_dp_refuses_options_it_does_not_support() -> None:
    train, val = digits_subset(100)
    model = digits_net("mlp")
    for options, message in [
        ({"compile": True}, "does not support --compile"),
        ({"precision": "bf16"}, "trains in fp32"),
        ({"max_grad_norm": 1.0}, "dp max_grad_norm"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            model.fit(train, val, epochs=1, dp=DPConfig(epsilon=3), progress=False, device="cpu", **options)


def test_standardisation_does_not_look_at_the_private_split() -> None:
    train, val = digits_subset(200)
    model = digits_net("mlp")
    model.fit(train, val, epochs=1, batch_size=50, dp=DPConfig(epsilon=3), progress=False, device="cpu")
    # digits declare pixels 0..16: mapped to -2..2 whatever the examples are
    norm = model.net.normalize
    assert torch.all(norm.mean == 8.0) and torch.all(norm.std == 4.0)


def test_resume_continues_the_accounting(tmp_path: Path) -> None:
    train, val = digits_subset(200)

    def fresh() -> LeptonModel:
        torch.manual_seed(0)
        return digits_net()

    options = {"batch_size": 50, "lr": 1e-2, "dp": DPConfig(epsilon=3), "progress": False, "device": "cpu"}
    straight = fresh().fit(train, val, epochs=4, checkpoint_dir=str(tmp_path / "a"), **options)
    # "interrupted" after 2
    fresh().fit(train, val, epochs=2, checkpoint_dir=str(tmp_path / "b"), **options)
    # the second half of a 4-epoch run: the noise was calibrated for 4 epochs, so resume with epochs=4
    resumed = fresh().fit(train, val, epochs=4, checkpoint_dir=str(tmp_path / "a"), resume=True, **options)
    assert resumed["resumed_from_epoch"] == 4 and resumed["privacy"]["steps"] == straight["privacy"]["steps"]
    with pytest.raises(InvalidInputError, match="other DP settings"):
        fresh().fit(train, val, epochs=4, checkpoint_dir=str(tmp_path / "b"), resume=True, **options)
    plain = {k: v for k, v in options.items() if k != "dp"}
    with pytest.raises(InvalidInputError, match="written by a private"):
        fresh().fit(train, val, epochs=4, checkpoint_dir=str(tmp_path / "a"), resume=True, **plain)


# -- the command line -------------------------------------------------------------------------------


def test_lepton_train_with_dp_reports_and_records_the_privacy_spent() -> None:
    r = lepton_proc(
        *"train --model mlp --data digits --name dp-mlp --epochs 15 --json".split(),
        *"--dp-epsilon 3 --dp-delta 1e-5".split(),
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    privacy = doc["privacy"]
    assert privacy["mechanism"] == MECHANISM == "DP-SGD (Opacus, RDP accountant)"
    assert 2.5 < privacy["epsilon"] <= 3 and privacy["delta"] == 1e-5 and privacy["target_epsilon"] == 3
    assert privacy["noise_multiplier"] > 0 and privacy["max_grad_norm"] == 1.0
    # chance is 0.1; the full figure (≥ 0.90) is benchmarks/privacy.py's
    assert doc["metrics"]["accuracy"] > 0.6
    shown = json.loads(lepton_proc("models", "show", "dp-mlp", "--json").stdout)
    assert shown["privacy"] == privacy and shown["recipe"]["privacy"] == privacy
    human = lepton_proc("models", "show", "dp-mlp:1")
    assert "privacy: (ε = " in human.stdout and "DP-SGD (Opacus, RDP accountant)" in human.stdout
    run = json.loads(lepton_proc("runs", "show", str(doc["run_id"]), "--json").stdout)
    assert run["params"]["dp"] == {"epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0}
    # DP default, then the user's
    assert run["params"]["batch_size"] == 128 and run["params"]["epochs"] == 15


def test_train_without_dp_has_a_null_privacy_block(cli) -> None:
    code, out, err = cli(
        "train", "--model", "mlp", "--data", "iris", "--name", "plain", "--epochs", "1", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["privacy"] is None
    code, out, _ = cli("models", "show", "plain", "--json")
    assert json.loads(out)["privacy"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dp-epsilon", "0"], "epsilon must be > 0"),
        (["--dp-epsilon", "-2"], "epsilon must be > 0"),
        (["--dp-epsilon", "3", "--dp-delta", "0"], "delta must be between 0 and 1"),
        (["--dp-epsilon", "3", "--dp-delta", "1"], "delta must be between 0 and 1"),
        (["--dp-epsilon", "3", "--max-grad-norm", "0"], "max_grad_norm"),
        (["--max-grad-norm", "-1"], "--max-grad-norm must be > 0"),
        (["--dp-delta", "1e-5"], "--dp-delta needs --dp-epsilon"),
        (["--dp-epsilon", "3", "--nproc", "2"], "not supported yet"),
        (["--dp-epsilon", "3", "--compile"], "does not support --compile"),
    ],
)
def test_bad_dp_options_are_one_line_exit_2(cli, args: list[str], message: str) -> None:
    code, out, err = cli("train", "--model", "mlp", "--data", "digits", "--name", "x", *args)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_the_cli_prints_the_replacement_notice_in_one_line(cli) -> None:
    code, out, err = cli(
        *"train --model cnn-small --data digits --name dp-cnn --dp-epsilon 8".split(),
        *"--epochs 1 --batch-size 256 --json".split(),
    )
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: DP-SGD: replaced 4 BatchNorm2d layer(s) with GroupNorm (Opacus ModuleValidator.fix): "
        "batch statistics would mix examples"
    ]
    assert json.loads(out)["privacy"]["epsilon"] <= 8
