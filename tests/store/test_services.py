from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.store import Services
from lepton_ai.store import services as services_module


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the registry's clock `seconds` further ahead (calls add up)."""
    now = services_module.utcnow()
    monkeypatch.setattr(services_module, "utcnow", lambda: now + timedelta(seconds=seconds))


def test_a_service_is_recorded_beats_and_stops(db_url: str) -> None:
    services = Services(db_url)
    s = services.record("serve", "digits-cnn", "http://127.0.0.1:8080", model_ref="digits-cnn:1", pid=4321)
    assert (s.kind, s.name, s.url, s.model_ref, s.pid, s.deployment) == (
        "serve",
        "digits-cnn",
        "http://127.0.0.1:8080",
        "digits-cnn:1",
        4321,
        None,
    )
    assert s.host and s.started_at == s.heartbeat_at and s.stopped_at is None and s.live
    beat = services.heartbeat(s.id)
    assert beat.heartbeat_at >= s.heartbeat_at and beat.started_at == s.started_at
    stopped = services.stopped(s.id)
    assert stopped.stopped_at is not None and not stopped.live
    # a late heartbeat or a second stop changes nothing
    assert services.heartbeat(s.id) == stopped == services.stopped(s.id) == services.get(s.id)


def test_to_dict_is_json_with_iso_times(db_url: str) -> None:
    s = Services(db_url).record("deploy", "digits-cnn", "http://ml.svc", deployment="k8s:ml/lepton-digits")
    d = json.loads(json.dumps(s.to_dict()))
    assert d["started_at"].endswith("Z") and d["stopped_at"] is None
    assert datetime.fromisoformat(d["started_at"].removesuffix("Z")) == s.started_at.replace(microsecond=0)
    assert (d["deployment"], d["stale"], d["live"], d["pid"]) == ("k8s:ml/lepton-digits", False, True, None)


def test_mistakes_name_what_was_wrong(db_url: str) -> None:
    services = Services(db_url)
    with pytest.raises(NotFoundError, match="no service 42"):
        services.get(42)
    with pytest.raises(NotFoundError, match="no service 42"):
        services.heartbeat(42)
    with pytest.raises(InvalidInputError, match="serve, deploy"):
        services.record("train", "x", "http://x")


def test_list_pages_newest_first_and_filters_live(db_url: str) -> None:
    services = Services(db_url)
    ids = [services.record("serve", f"s{i}", f"http://127.0.0.1:{9000 + i}").id for i in range(5)]
    assert [s.id for s in services.list(limit=2)] == ids[:-3:-1]
    assert [s.id for s in services.list(limit=2, before=ids[3])] == [ids[2], ids[1]]
    assert [s.id for s in services.list(before=ids[1])] == [ids[0]]
    services.stopped(ids[1])
    assert [s.id for s in services.list(live=True)] == [ids[4], ids[3], ids[2], ids[0]]
    assert [s.id for s in services.list(live=False)] == [ids[1]]
    assert [s.id for s in services.list(live=True, before=ids[2], limit=1)] == [ids[0]]


def test_a_process_that_stops_beating_goes_stale_a_deployment_never(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEPTON_HEARTBEAT_S", "2")
    services = Services(db_url)
    served = services.record("serve", "a", "http://127.0.0.1:9001", pid=1)
    deployed = services.record("deploy", "b", "http://127.0.0.1:8000/b", deployment="ray:b")
    stopped = services.stopped(services.record("serve", "c", "http://127.0.0.1:9002").id)
    # three missed beats of 2 s
    later(monkeypatch, 5)
    assert [s.stale for s in services.list()] == [False, False, False]
    later(monkeypatch, 2)
    assert services.get(served.id).stale and not services.get(served.id).live
    assert [s.id for s in services.list(live=True)] == [deployed.id]
    assert [s.id for s in services.list(live=False)] == [stopped.id, served.id]
    assert not services.get(stopped.id).stale
    # a beat brings it back
    assert services.heartbeat(served.id).live


def test_a_new_service_at_the_same_place_replaces_the_old_one(db_url: str) -> None:
    services = Services(db_url)
    killed = services.record("serve", "a", "http://127.0.0.1:9001", host="box1")
    elsewhere = services.record("serve", "a", "http://127.0.0.1:9001", host="box2")
    again = services.record("serve", "a", "http://127.0.0.1:9001", host="box1")
    first = services.record("deploy", "m", "http://h:8000/m", deployment="ray:m")
    other = services.record("deploy", "m", "http://other:8000/m", deployment="ray:m")
    redeployed = services.record("deploy", "m", "http://h:8000/m", deployment="ray:m")
    live = {s.id for s in services.list(live=True)}
    assert live == {elsewhere.id, again.id, other.id, redeployed.id}
    assert services.get(killed.id).stopped_at == again.started_at
    assert services.get(first.id).stopped_at == redeployed.started_at


def test_an_invalid_heartbeat_interval_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("LEPTON_HEARTBEAT_S", bad)
        with pytest.raises(InvalidInputError, match="LEPTON_HEARTBEAT_S"):
            Services().list()
