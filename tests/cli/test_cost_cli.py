"""The cost card on the command line: `lepton models show` prints it, `lepton bench serve --record` feeds it
from a real `lepton serve`, `lepton models instances` lists the prices."""

from __future__ import annotations

import json
import os
import warnings
from datetime import datetime
from pathlib import Path

import pytest

from lepton_ai.store import Registry
from lepton_ai.store.cost import DEFAULT_INSTANCE, INSTANCES


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    p = tmp_path / "model.safetensors"
    p.write_bytes(os.urandom(256))
    return p


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    p = tmp_path / "body.json"
    p.write_text(json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]}))
    return p


def test_models_show_prints_the_card_beside_the_parent(cli, weights: Path) -> None:
    cli("models", "register", "m", str(weights), "--metrics", '{"throughput_per_s": 50}')
    cli("models", "register", "m", str(weights), "--metrics", '{"throughput_per_s": 200}', "--parent", "m:1")
    code, out, _ = cli("models", "show", "m:2", "--price-per-hour", "0.72", "--json")
    cost = json.loads(out)["cost"]
    assert code == 0 and cost["price"] == {"per_hour": 0.72, "source": "--price-per-hour"}
    assert [(line["ref"], line["usd_per_million"]) for line in cost["lines"]] == [("m:2", 1.0), ("m:1", 4.0)]
    assert cost["times_cheaper"] == 4.0
    code, out, _ = cli("models", "show", "m:2")
    # the default instance, named
    assert code == 0 and f"aws {DEFAULT_INSTANCE} on-demand" in out and "compression report" in out
    assert "4.00× cheaper than m:1" in out
    code, out, _ = cli("models", "show", "m:1", "--instance", "g5.xlarge", "--json")
    [line] = json.loads(out)["cost"]["lines"]
    assert line["usd_per_million"] == pytest.approx(1.006 / (50 * 3600) * 1e6)


def test_a_version_never_measured_gets_the_hint(cli, weights: Path) -> None:
    cli("models", "register", "m", str(weights))
    code, out, _ = cli("models", "show", "m", "--json")
    [line] = json.loads(out)["cost"]["lines"]
    assert code == 0 and line["usd_per_million"] is None and "--record m:1" in line["why"]
    code, out, _ = cli("models", "show", "m")
    assert code == 0 and "not measured" in out
    assert "m:1: no measured throughput: serve it, then run lepton bench serve URL --payload BODY.json" in out


@pytest.mark.parametrize(
    "args, says",
    [
        (["--instance", "p9.huge"], "unknown instance 'p9.huge': the known ones are "),
        (["--price-per-hour", "-1"], "must be a positive number of US dollars"),
        (["--price-per-hour", "1", "--instance", "g5.xlarge"], "not both"),
    ],
)
def test_bad_prices_are_one_line_errors(cli, weights: Path, args: list[str], says: str) -> None:
    cli("models", "register", "m", str(weights))
    code, out, err = cli("models", "show", "m", *args)
    assert code == 2 and out == "" and says in err and err.count("\n") == 1, err


def test_models_instances_lists_the_prices_with_their_dates(cli) -> None:
    code, out, _ = cli("models", "instances", "--json")
    listed = json.loads(out)
    assert code == 0 and [i["name"] for i in listed] == list(INSTANCES)
    assert all(i["read"] and i["url"] and i["per_hour"] > 0 for i in listed)
    code, out, _ = cli("models", "instances")
    # the table may wrap a cell over two lines
    assert code == 0 and DEFAULT_INSTANCE in out and "(default)" in out and "2026-06-17" in out
    assert "[1] https://" in out


def test_bench_serve_records_its_figures_for_the_cost_card(cli, payload: Path) -> None:
    from lepton_ai import LeptonModel
    from lepton_ai.serve.server import ServerProcess

    with warnings.catch_warnings():
        # an untrained model: its answers do not matter, its speed does
        warnings.simplefilter("ignore")
        net = LeptonModel(num_classes=3, input_size=(4,)).load_pretrained_model("mlp")
    ref = net.save("tiny")
    # its optimised child, with only a compression report's figure
    child = (
        Registry()
        .register(
            "tiny", Registry().fetch(ref), metrics={"throughput_per_s": 1e6}, parent=ref, format="lepton"
        )
        .ref
    )
    bench = ("bench", "serve", "--payload", str(payload), "--duration", "0.5", "--warmup", "0.2")
    with ServerProcess([ref]) as server:
        code, out, err = cli(*bench, server.url, "--concurrency", "2", "--record", ref, "--json")
    assert code == 0, err
    result = json.loads(out)
    metrics = Registry().get(ref).metrics
    assert err.strip() == f"recorded in {ref}'s metrics: {', '.join(metrics)}"
    assert metrics["serve_throughput_per_s"] == result["examples_per_s"] > 0
    assert metrics["serve_latency_ms_p50"] == result["latency_ms"]["p50"] <= metrics["serve_latency_ms_p99"]
    assert (metrics["serve_error_rate"], metrics["serve_concurrency"]) == (0.0, 2)
    assert datetime.fromisoformat(metrics["serve_measured_at"]).tzinfo is not None
    code, out, _ = cli("models", "show", child, "--json")
    lines = json.loads(out)["cost"]["lines"]
    assert [(line["ref"], line["source"]) for line in lines] == [
        (child, "compression report"),
        (ref, "bench serve"),
    ]
    assert lines[1]["throughput_per_s"] == result["examples_per_s"]


def test_bench_serve_records_nothing_it_could_not_measure(cli, weights: Path, payload: Path) -> None:
    from lepton_ai.serve.server import free_port

    cli("models", "register", "m", str(weights), "--metrics", '{"accuracy": 0.5}')
    nowhere = f"http://127.0.0.1:{free_port()}"
    bench = ("bench", "serve", nowhere, "--payload", str(payload), "--duration", "0.3", "--warmup", "0")
    for args, says in [
        (["--record", "ghost:1"], "unknown model 'ghost'"),
        (["--record", "m:1", "--rate", "10"], "measure without --rate"),
        (["--record", "m:1", "--concurrency", "1"], "not recorded in m:1: no request succeeded"),
    ]:
        code, out, err = cli(*bench, *args)
        assert code == 2 and says in err and err.count("\n") == 1, err
    assert Registry().get("m:1").metrics == {"accuracy": 0.5}
