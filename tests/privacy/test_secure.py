from __future__ import annotations

import json
import os
import queue
import signal
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("opacus")

from lepton_ai.errors import InvalidInputError  # noqa: E402
from lepton_ai.privacy.aggregation import aggregate, parse_strategy  # noqa: E402
from lepton_ai.privacy.federated import prepare  # noqa: E402
from lepton_ai.privacy.flower_server import secure_shares  # noqa: E402
from lepton_ai.privacy.secure import plan_of  # noqa: E402
from lepton_ai.privacy.secure_apps import DeltaClient, SecureStrategy, check_reply, client_update, pack  # noqa: E402
from tests.privacy.federation import certificates, finish, fl, fl_server, report  # noqa: E402

# a round's options, the same for the server and for the updates the test computes itself
ROUND = "--model cnn-small --data digits --local-epochs 1 --seed 3".split()


def _setup(dp: dict | None = None, model: str = "cnn-small") -> object:
    return prepare(
        model,
        "digits",
        clients=4,
        rounds=1,
        fraction=1.0,
        local_epochs=1,
        lr=0.05,
        batch_size=32,
        strategy="fedavg",
        schedule=None,
        dp=dp,
        seed=3,
    )


def test_a_client_update_is_its_change_clipped_under_dp() -> None:
    before = {"w": torch.zeros(3), "bn.mean": torch.zeros(2), "steps": torch.tensor(4)}
    after = {"w": torch.tensor([3.0, 4.0, 0.0]), "bn.mean": torch.ones(2), "steps": torch.tensor(9)}
    plain = client_update(before, after, ["w"], clip=0)
    assert plain["w"].tolist() == [3, 4, 0] and plain["bn.mean"].tolist() == [1, 1] and plain["steps"] == 0
    clipped = client_update(before, after, ["w"], clip=1.0)
    assert torch.allclose(clipped["w"], torch.tensor([0.6, 0.8, 0.0])) and clipped["bn.mean"].abs().sum() == 0


@pytest.mark.parametrize("dp", [None, {"noise_multiplier": 1.0, "clip": 0.5}])
def test_the_strategy_on_the_mean_update_equals_our_aggregation_on_each(dp: dict | None) -> None:
    """What SecAgg+ hands the strategy (the weighted mean of the updates) gives the next global state our
    aggregation gives from the clients' own states: the same step, the same DP noise."""
    run = _setup(dp, model="mlp")
    plan = plan_of(
        run, min_clients=3, round_timeout=30, max_examples=10_000, secure=True, shares=3, threshold=2
    )
    state = {k: v.clone() for k, v in run.net.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    clients = [{k: v + torch.randn(v.shape, generator=gen) * 0.1 for k, v in state.items()} for _ in range(3)]
    examples = [10, 30, 60] if dp is None else [1, 1, 1]
    deltas = [client_update(state, c, run.weights, run.dp.clip if run.dp else 0) for c in clients]
    mean = {k: sum(n * d[k] for d, n in zip(deltas, examples)) / sum(examples) for k in state}

    done: list = []
    strategy = SecureStrategy(plan, state, done.append)
    strategy.asked = 3
    results = [(None, _FitRes(pack(mean), n)) for n in examples]
    strategy.aggregate_fit(1, results, [])

    reference = aggregate(
        parse_strategy("fedavg"),
        state,
        [({k: state[k] + d[k] for k in state}, n) for d, n in zip(deltas, examples)],
        weights=run.weights,
        dp=run.dp,
        expected_clients=3.0,
        generator=torch.Generator().manual_seed(plan.configs[0]["seed"] + 1),
    )
    assert all(torch.allclose(strategy.state[k], reference[k], atol=1e-5) for k in state)
    ((number, handed_on, figures),) = done
    assert (number, figures["clients"], figures["updates_seen"]) == (1, 3, 1) and handed_on is strategy.state


class _FitRes:
    def __init__(self, arrays: list, examples: int) -> None:
        from flwr.common import ndarrays_to_parameters

        self.parameters, self.num_examples = ndarrays_to_parameters(arrays), examples


def test_flower_reports_nothing_to_its_telemetry_from_a_lepton_process() -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "FLWR_TELEMETRY_ENABLED"}
    check = (
        "import lepton_ai.privacy.secure_apps, flwr.supercore.telemetry as t; print(t.FLWR_TELEMETRY_ENABLED)"
    )
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
    # one who asked for it keeps it
    on = subprocess.run(
        [sys.executable, "-c", check],
        env={**env, "FLWR_TELEMETRY_ENABLED": "1"},
        capture_output=True,
        text=True,
    )
    assert on.stdout.strip() == "1"
    # Flower imported before lepton: turned off all the same
    first = "import flwr.supercore.telemetry as t, lepton_ai.privacy; print(t.FLWR_TELEMETRY_ENABLED)"
    out = subprocess.run([sys.executable, "-c", first], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def _stage(stage: str, asked: dict, answer: dict | None) -> tuple:
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    sent = Message(RecordDict({"secaggplus_configs": ConfigRecord({"stage": stage, **asked})}), 7, "train")
    content = RecordDict({} if answer is None else {"secaggplus_configs": ConfigRecord(answer)})
    return sent, Message(content, reply_to=sent)


@pytest.mark.parametrize(
    ("stage", "asked", "answer", "refused"),
    [
        ("setup", {}, {"pk1": b"a", "pk2": b"b"}, None),
        ("setup", {}, {"pk1": b"a"}, "without what the stage needs"),
        ("setup", {}, None, "without what the stage needs"),
        ("share_keys", {}, {"dsts": [2, 3], "ctxts": [b"x", b"y"]}, None),
        ("share_keys", {}, {"dsts": [2, 3], "ctxts": [b"x"]}, "differ in number"),
        ("share_keys", {}, {"dsts": "2,3", "ctxts": [b"x"]}, "without what the stage needs"),
        ("unmask", {"active_nids": [2, 3], "dead_nids": [4]}, {"nids": [2, 4], "shares": [b"s", b"t"]}, None),
        (
            "unmask",
            {"active_nids": [2, 3], "dead_nids": [4]},
            {"nids": [2, 9], "shares": [b"s", b"t"]},
            "not asked",
        ),
        ("collect_masked_vectors", {}, {"masked_params": [b"v"]}, "fitres"),
    ],
)
def test_a_secagg_reply_the_workflow_would_fail_on_is_refused(
    stage: str, asked: dict, answer: dict | None, refused: str | None
) -> None:
    """Flower's workflow indexes what each stage's reply holds: a reply that would raise there (and end the
    whole federation) is refused here, as its client's failure."""
    sent, reply = _stage(stage, asked, answer)
    if refused is None:
        check_reply(sent, reply)
    else:
        with pytest.raises((ValueError, KeyError), match=refused):
            check_reply(sent, reply)


def test_what_secure_aggregation_cannot_run_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidInputError, match="--min-clients 3 or more"):
        secure_shares(2, "fedavg", None, None)
    with pytest.raises(InvalidInputError, match="trimmed mean needs each client's update"):
        secure_shares(4, "trimmed", None, None)
    with pytest.raises(InvalidInputError, match="threshold < shares"):
        secure_shares(4, "fedavg", 4, 4)
    assert secure_shares(4, "fedavg", None, None) == {"secure": True, "shares": 4, "threshold": 3}
    server = fl("server", "--secure-aggregation", "--min-clients", "2")
    _, err = finish(server, 60)
    assert server.returncode == 2 and err.strip().splitlines()[-1].startswith(
        "error: secure aggregation needs"
    )


def _kill_in_training(client: object, timeout: float = 240) -> None:
    """Kill `client` (a `lepton fl client --secure-aggregation --verbose` process) as its third message of
    round 1 comes: SecAgg+'s setup and key sharing are done, and it is asked to train and send its masked
    update, which it never does."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in client.stderr], daemon=True).start()
    while not lines.get(timeout=timeout).startswith("message 3:"):
        pass
    os.killpg(client.pid, signal.SIGKILL)


def test_secure_aggregation_survives_a_dropout_and_equals_fedavg(lepton_home: Path) -> None:
    """Four client processes under SecAgg+, one killed mid-round: the round completes with the other three,
    the server saw only their masked sum, and the new global model is plain FedAvg of their updates to
    within SecAgg+'s quantisation."""
    from lepton_ai.models import LeptonModel

    address, server = fl_server(
        *"--secure-aggregation --rounds 1 --min-clients 4 --round-timeout 15 --name fl-sec --json".split(),
        *ROUND,
    )
    clients = [
        fl("client", "--server", address, "--data", f"digits:{i}/4", "--secure-aggregation", *verbose)
        for i, verbose in enumerate([[]] * 3 + [["--verbose"]])
    ]
    _kill_in_training(clients[3])
    out, err = finish(server)
    assert server.returncode == 0, err[-3000:]
    (row,) = report(lepton_home)["rounds"]
    assert (row["clients"], row["failures"], row.get("updates_seen")) == (3, 1, 1), (row, err[-1500:])

    run = _setup()
    plan = plan_of(
        run, min_clients=4, round_timeout=15, max_examples=10_000, secure=True, shares=4, threshold=3
    )
    start = {k: v.clone() for k, v in run.net.state_dict().items()}
    updates = []
    for i in range(3):
        client = DeltaClient({"data": f"digits:{i}/4", "partition": "iid", "seed": 0, "device": "cpu"})
        arrays, n, _ = client.fit(pack(start), plan.configs[0])
        updates.append((torch.from_numpy(arrays[0]).double(), n))
    total = sum(n for _, n in updates)
    fedavg = sum(d * n for d, n in updates) / total
    # the global model's change, every entry in order (integer ones do not move)
    change = torch.from_numpy(pack(LeptonModel.load("fl-sec:1").state_dict())[0] - pack(start)[0]).double()
    gap = float((change - fedavg).abs().max())
    # SecAgg+ rounds each client's weighted update (weight n/max_weight, here n/10,000) to one of 2^22 levels
    # over ±8: at most a level each, over the sum of the weights
    bound = len(updates) * (2 * 8 / 2**22) / (total / 10_000) + 1e-5
    assert gap <= bound, (gap, bound)
    # and the server's result is not one client's update
    assert min(float((change - d).abs().max()) for d, _ in updates) > 100 * gap
    print(f"largest difference from FedAvg: {gap:.2e} (bound {bound:.2e})")
    for c in clients[:3]:
        _, cerr = finish(c, 90)
        assert c.returncode == 0, cerr[-2000:]


def test_client_level_dp_under_secure_aggregation_over_tls(lepton_home: Path, tmp_path: Path) -> None:
    from lepton_ai.store import Registry

    tls = certificates(tmp_path / "certs")
    address, server = fl_server(
        *"--secure-aggregation --rounds 2 --min-clients 3 --dp-epsilon 8 --name fl-sec-dp --json".split(),
        *("--certificates", str(tls)),
    )
    trust = ("--root-certificates", str(tls / "ca.crt"))
    clients = [
        fl("client", "--server", address, "--data", f"digits:{i}/3", "--secure-aggregation", *trust)
        for i in range(3)
    ]
    out, err = finish(server)
    assert server.returncode == 0, err[-3000:]
    assert 7.5 < json.loads(out)["privacy"]["epsilon"] <= 8
    recorded = Registry().get("fl-sec-dp:1").recipe["privacy"]
    assert (
        recorded["clipping"] == "on the clients, under secure aggregation"
        and recorded["noise_multiplier"] > 0
    )
    assert [(r["clients"], r["updates_seen"]) for r in report(lepton_home)["rounds"]] == [(3, 1)] * 2
    for c in clients:
        finish(c, 90)
        assert c.returncode == 0
