"""The cost card: $ per million inferences from measured throughput and an hourly price."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.store import Registry
from lepton_ai.store.cost import (
    DEFAULT_INSTANCE,
    INSTANCES,
    CostCard,
    Price,
    cost_card,
    price,
    usd_per_million,
)


@pytest.fixture
def registry() -> Registry:
    return Registry()


def _register(registry: Registry, tmp_path: Path, name: str, metrics: dict, parent: str | None = None) -> str:
    path = tmp_path / f"{name}-{len(os.listdir(tmp_path))}.bin"
    path.write_bytes(os.urandom(64))
    return registry.register(name, path, metrics=metrics, parent=parent).ref


def test_dollars_per_million_on_known_figures() -> None:
    # $0.36 an hour at 100 a second: 360,000 an hour for 36 cents, so $1 a million
    assert usd_per_million(0.36, 100) == pytest.approx(1.0)
    assert usd_per_million(3.6, 1) == pytest.approx(1000.0)
    # ten times the throughput, a tenth of the cost
    assert usd_per_million(1.006, 2000) == pytest.approx(usd_per_million(1.006, 200) / 10)


def test_bench_serve_is_preferred_to_the_compression_report(registry: Registry, tmp_path: Path) -> None:
    both = _register(registry, tmp_path, "m", {"throughput_per_s": 500.0, "serve_throughput_per_s": 100})
    report = _register(registry, tmp_path, "m", {"throughput_per_s": 500.0, "serve_throughput_per_s": 0})
    [line] = cost_card(registry, both, Price(0.36, "test")).lines
    assert (line.ref, line.throughput_per_s, line.source, line.why) == (both, 100.0, "bench serve", None)
    assert line.usd_per_million == pytest.approx(1.0)
    # a throughput of 0 measures nothing: the report's is used
    [line] = cost_card(registry, report, Price(0.36, "test")).lines
    assert (line.throughput_per_s, line.source) == (500.0, "compression report")
    assert line.usd_per_million == pytest.approx(0.2)


def test_the_parent_stands_beside_the_version(registry: Registry, tmp_path: Path) -> None:
    parent = _register(registry, tmp_path, "m", {"throughput_per_s": 50.0, "accuracy": 0.9})
    child = _register(registry, tmp_path, "m", {"throughput_per_s": 200.0}, parent=parent)
    card = cost_card(registry, child, price(per_hour=0.72))
    assert [line.ref for line in card.lines] == [child, parent]
    assert [line.usd_per_million for line in card.lines] == pytest.approx([1.0, 4.0])
    assert card.times_cheaper == pytest.approx(4.0)
    doc = card.to_dict()
    assert doc["price"] == {"per_hour": 0.72, "source": "--price-per-hour"}
    assert doc["lines"][1] == {
        "ref": parent,
        "throughput_per_s": 50.0,
        "source": "compression report",
        "usd_per_million": pytest.approx(4.0),
        "why": None,
    }
    assert doc["times_cheaper"] == pytest.approx(4.0)
    # a version with no parent has one line
    assert [line.ref for line in cost_card(registry, parent, price()).lines] == [parent]


def test_no_throughput_says_how_to_measure_it(registry: Registry, tmp_path: Path) -> None:
    parent = _register(registry, tmp_path, "m", {"accuracy": 0.9})
    child = _register(registry, tmp_path, "m", {"throughput_per_s": 10, "note": "fast"}, parent=parent)
    card = cost_card(registry, child, price())
    assert card.lines[0].usd_per_million == pytest.approx(INSTANCES[DEFAULT_INSTANCE].per_hour / 0.036)
    missing = card.lines[1]
    assert (missing.throughput_per_s, missing.source, missing.usd_per_million) == (None, None, None)
    assert (
        missing.why is not None
        and f"lepton bench serve URL --payload BODY.json --record {parent}" in missing.why
    )
    assert card.times_cheaper is None and card.to_dict()["times_cheaper"] is None
    with pytest.raises(NotFoundError, match="unknown model 'ghost'"):
        cost_card(registry, "ghost", price())


def test_prices_given_named_or_by_default() -> None:
    assert price(per_hour=2) == Price(2.0, "--price-per-hour")
    default = price()
    assert default == INSTANCES[DEFAULT_INSTANCE].price and INSTANCES[DEFAULT_INSTANCE].kind == "cpu"
    assert DEFAULT_INSTANCE in default.source and "read 20" in default.source
    assert price(instance="G5.XLARGE").per_hour == INSTANCES["g5.xlarge"].per_hour
    assert price(instance="g5.xlarge").source == "aws g5.xlarge on-demand us-east-1, read 2026-06-17"


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"per_hour": 1.0, "instance": "g5.xlarge"}, "not both"),
        ({"per_hour": -0.5}, "must be a positive number"),
        ({"per_hour": 0.0}, "must be a positive number"),
        ({"per_hour": math.nan}, "must be a positive number"),
        ({"per_hour": math.inf}, "must be a positive number"),
        ({"instance": "p9.huge"}, "unknown instance 'p9.huge': the known ones are m7g.large, "),
    ],
)
def test_bad_prices_are_refused(kwargs: dict, says: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(says)):
        price(**kwargs)


def test_every_instance_says_where_and_when_its_price_was_read() -> None:
    assert {i.kind for i in INSTANCES.values()} == {"cpu", "gpu"}
    for name, inst in INSTANCES.items():
        assert name == inst.name and 0 < inst.per_hour < 100
        assert re.fullmatch(r"20\d\d-\d\d(-\d\d)?", inst.read) and inst.url.startswith("https://")
        assert inst.to_dict()["per_hour"] == inst.per_hour


def test_a_card_is_json_ready(registry: Registry, tmp_path: Path) -> None:
    import json

    ref = _register(registry, tmp_path, "m", {"serve_throughput_per_s": 1000})
    card = cost_card(registry, ref, price(instance="t3.large"))
    assert isinstance(card, CostCard)
    assert json.loads(json.dumps(card.to_dict()))["lines"][0]["source"] == "bench serve"
