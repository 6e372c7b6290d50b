"""`lepton serve` records itself in the registry, beats while it serves, and says when it stopped; a registry
that cannot be written costs one warning line, never the service."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

import httpx
import pytest

from lepton_ai.serve.registration import service_url
from lepton_ai.serve.server import ServerProcess, serve
from lepton_ai.store import ServiceInfo, Services
from tests.jobs.conftest import wait_for
from tests.serving import RecordedServer


@pytest.mark.parametrize(
    ("options", "sig", "code"),
    [
        ([], signal.SIGTERM, -signal.SIGTERM),
        ([], signal.SIGINT, 0),
        (["--model-process"], signal.SIGTERM, -signal.SIGTERM),
    ],
    ids=["sigterm", "ctrl-c", "model-process"],
)
def test_a_served_process_records_its_real_port_beats_and_stops(
    tiny_photon: str,
    recorded_server: type[RecordedServer],
    options: list[str],
    sig: signal.Signals,
    code: int,
) -> None:
    with recorded_server([tiny_photon, *options]) as server:
        assert server.proc is not None and server.info is not None
        info = server.info
        port = int(info.url.rpartition(":")[2])
        assert port > 0 and info.url == f"http://127.0.0.1:{port}"
        assert (info.kind, info.name, info.model_ref, info.deployment) == ("serve", "tiny", tiny_photon, None)
        assert (info.pid, info.host) == (server.proc.pid, socket.gethostname())
        assert httpx.post(f"{server.url}/square", json={"x": 3}).json() == 9.0
        wait_for(lambda: server.record().heartbeat_at > info.heartbeat_at, timeout=10)
        assert [s.id for s in Services().list(live=True)] == [info.id]
        os.killpg(server.proc.pid, sig)
        # as it ended without the registry: uvicorn re-raises SIGTERM once drained, Ctrl-C is a normal end
        assert server.proc.wait(30) == code, server.output()
        assert "not recorded" not in server.output()
    stopped = server.record()
    assert stopped.stopped_at is not None and stopped.stopped_at >= stopped.heartbeat_at
    assert Services().list(live=True) == []


def test_workers_are_recorded_as_their_supervisor(tiny_photon: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[ServiceInfo]] = []
    # the supervisor returns once its workers drained (after SIGTERM or Ctrl-C)
    monkeypatch.setattr(
        "lepton_ai.serve.server._supervise",
        lambda workers, config, options: seen.append(wait_for(lambda: Services().list(), timeout=10)),
    )
    serve(tiny_photon, port=0, workers=2)
    (info,) = seen[0]
    assert (
        info.url.startswith("http://127.0.0.1:") and not info.url.endswith(":0") and info.pid == os.getpid()
    )
    assert Services().get(info.id).stopped_at is not None


def test_serving_goes_on_with_one_warning_when_the_registry_is_down(tiny_photon: str) -> None:
    # a PostgreSQL server that is not there
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"postgresql://lepton@127.0.0.1:{s.getsockname()[1]}/lepton"
    env = {"LEPTON_DB_URL": nobody, "LEPTON_HEARTBEAT_S": "0.05"}
    with ServerProcess([tiny_photon], env=env) as server:
        # many heartbeats
        for x in range(20):
            assert httpx.post(f"{server.url}/square", json={"x": x}).json() == x * x
        wait_for(lambda: "not recorded" in server.output(), timeout=10)
        assert server.stop() == -signal.SIGTERM
        warnings = [line for line in server.output().splitlines() if "registry" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING:"), warnings
    assert "cannot open the registry" in warnings[0] and "serving goes on" in warnings[0]


def test_a_bad_heartbeat_interval_is_a_one_line_error(
    tiny_photon: str, cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEPTON_HEARTBEAT_S", "often")
    code, _, err = cli("serve", tiny_photon, "--port", "0")
    assert code == 2 and "LEPTON_HEARTBEAT_S" in err and len(err.strip().splitlines()) == 1, err


def test_a_server_on_every_interface_is_recorded_under_this_machine_s_name() -> None:
    assert service_url("127.0.0.1", 80) == "http://127.0.0.1:80"
    assert service_url("0.0.0.0", 8080) == service_url("::", 8080) == f"http://{socket.gethostname()}:8080"
    assert service_url("::1", 8080) == "http://[::1]:8080"
