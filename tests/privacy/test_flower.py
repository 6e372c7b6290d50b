from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lepton_ai.errors import InvalidInputError

pytest.importorskip("flwr")
pytest.importorskip("opacus")

from lepton_ai.privacy.flower import client_data, parse_part  # noqa: E402
from lepton_ai.serve.server import free_port  # noqa: E402
from tests.privacy.federation import certificates, finish, fl, fl_server, listening, report  # noqa: E402


def test_client_data_parts() -> None:
    assert parse_part("digits:3/10") == ("digits", 3, 10) and parse_part("data/x.csv") == (
        "data/x.csv",
        None,
        None,
    )
    parts = [client_data(f"digits:{i}/4", "dirichlet:0.5", seed=2) for i in range(4)]
    assert sum(len(p) for p in parts) == 1257 and parts[1].name == "digits[train][client 1/4]"
    for bad in ("digits:4/4", "digits:0/0"):
        with pytest.raises(InvalidInputError, match="0 ≤ I < N"):
            parse_part(bad)


def test_server_and_three_client_processes_for_three_rounds(lepton_home: Path) -> None:
    from lepton_ai.store import Registry

    address, server = fl_server(
        *"--rounds 3 --min-clients 3 --model mlp --data digits --name fl-net --json".split()
    )
    clients = [
        fl("client", "--server", address, "--data", f"digits:{i}/3", "--partition", "iid") for i in range(3)
    ]
    out, err = finish(server)
    assert server.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert (doc["name"], doc["version"], doc["rounds"], doc["clients"], doc["privacy"]) == (
        "fl-net",
        1,
        3,
        3,
        None,
    )
    # chance is 0.1
    assert doc["metrics"]["accuracy"] > 0.5
    for c in clients:
        _, cerr = finish(c, 60)
        assert c.returncode == 0, cerr[-2000:]
    rows = report(lepton_home)["rounds"]
    assert [(r["clients"], r["failures"], r["examples"]) for r in rows] == [(3, 0, 1257)] * 3
    assert Registry().get("fl-net:1").metrics["accuracy"] == doc["metrics"]["accuracy"]


def test_client_level_dp_over_the_network(lepton_home: Path) -> None:
    from lepton_ai.store import Registry

    address, server = fl_server(*"--rounds 2 --min-clients 2 --name fl-dp-net --dp-epsilon 8 --json".split())
    clients = [fl("client", "--server", address, "--data", f"digits:{i}/2") for i in range(2)]
    out, err = finish(server)
    assert server.returncode == 0, err[-3000:]
    privacy = json.loads(out)["privacy"]
    assert 7.5 < privacy["epsilon"] <= 8 and "client-level" in privacy["mechanism"]
    recorded = Registry().get("fl-dp-net:1").recipe["privacy"]
    assert recorded["sample_rate"] == 1.0 and recorded["rounds"] == 2 and recorded["noise_multiplier"] > 0
    for c in clients:
        finish(c, 60)
        assert c.returncode == 0


@pytest.mark.slow
def test_a_client_killed_mid_round_does_not_stop_the_server(lepton_home: Path) -> None:
    address, server = fl_server(
        *"--rounds 4 --min-clients 2 --model mlp".split(),
        # rounds of a few seconds
        *"--local-epochs 25 --batch-size 8 --name fl-kill --json".split(),
    )
    clients = [fl("client", "--server", address, "--data", f"digits:{i}/3") for i in range(3)]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any(row["clients"] == 3 for row in _rounds_so_far(lepton_home)):
        # until a round has had all three clients: the next one starts right away
        time.sleep(0.2)
    time.sleep(0.3)
    # dies in the middle of training
    os.killpg(clients[2].pid, signal.SIGKILL)
    clients[2].wait()
    out, err = finish(server)
    assert server.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert doc["rounds"] == 4 and doc["version"] == 1
    rows = report(lepton_home)["rounds"]
    assert sum(r["failures"] for r in rows) == 1 and rows[-1]["clients"] == 2
    for c in clients[:2]:
        finish(c, 60)
        assert c.returncode == 0


def _rounds_so_far(home: Path) -> list[dict]:
    """The rounds the server has logged to the registry so far."""
    from lepton_ai.store import Registry

    runs = Registry().list_runs("federated")
    return [{"clients": value} for _, value in runs[0].history.get("clients", [])] if runs else []


def test_a_busy_port_or_an_absent_server_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        busy = fl("server", "--address", address, "--rounds", "1", "--model", "mlp")
        lonely_at = f"127.0.0.1:{free_port()}"
        lonely = fl("server", "--address", lonely_at, "--min-clients", "2", "--round-timeout", "3")
        listening(lonely_at, lonely)
        # one of the two it waits for
        alone = fl("client", "--server", lonely_at, "--data", "digits:0/2")
        absent = fl(
            "client", "--server", f"127.0.0.1:{free_port()}", "--data", "digits:0/2", "--connect-timeout", "1"
        )
        _, err = finish(busy, 120)
    assert (
        busy.returncode == 2
        and "already in use" in err
        and err.strip().splitlines()[-1].startswith("error: ")
    )
    _, err = finish(absent, 120)
    assert absent.returncode == 2 and err.strip().splitlines()[-1].startswith("error: ")
    assert "Flower server" in err.strip().splitlines()[-1]
    # too few clients came: a clear error, not a day's wait, and the process ends
    _, err = finish(lonely, 120)
    assert lonely.returncode == 2 and err.strip().splitlines()[-1] == (
        "error: round 1: fewer than 2 clients connected within 3 s (--min-clients, --round-timeout)"
    )
    # its server went away: the client ends too
    finish(alone, 60)


def test_no_client_breaks_or_steers_the_federation(lepton_home: Path) -> None:
    attacks = ["garbage", "pickled", "empty", "strings", "count:0", "count:-5", f"count:{10**9}"]
    address, server = fl_server(
        *f"--rounds 2 --min-clients {1 + len(attacks)} --model mlp --max-client-examples 1000".split(),
        *"--round-timeout 120 --name fl-attacked --json".split(),
    )
    honest = fl("client", "--server", address, "--data", "digits:0/2")
    attackers = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("attacker.py")), address, kind],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for kind in attacks
    ]
    out, err = finish(server)
    assert server.returncode == 0, err[-3000:]
    for c in [honest, *attackers]:
        finish(c, 60)
    assert honest.returncode == 0
    rows = report(lepton_home)["rounds"]
    # every forged update is its client's failure, but the one claiming 10⁹ examples, which weighs 1,000
    assert [(r["clients"], r["failures"], r["capped"]) for r in rows] == [(2, 6, 1)] * 2
    assert all(r["examples"] == len(client_data("digits:0/2")) + 1000 for r in rows)
    assert "a client's update was refused" in err


def test_a_federation_over_tls_refuses_clients_in_the_clear(lepton_home: Path, tmp_path: Path) -> None:
    certs = certificates(tmp_path / "certs")
    address, server = fl_server(
        *"--rounds 1 --min-clients 1 --model mlp --name fl-tls --json --round-timeout 60".split(),
        *("--certificates", str(certs)),
    )
    clear = fl("client", "--server", address, "--data", "digits:1/2", "--connect-timeout", "3")
    _, clear_err = finish(clear, 60)
    trusted = fl(
        "client", "--server", address, "--data", "digits:0/2", "--root-certificates", str(certs / "ca.crt")
    )
    out, err = finish(server)
    assert server.returncode == 0, err[-3000:]
    assert json.loads(out)["rounds"] == 1 and "in the clear" not in err
    finish(trusted, 60)
    assert trusted.returncode == 0
    assert clear.returncode == 2 and clear_err.strip().splitlines()[-1].startswith("error: ")


def test_a_server_beyond_loopback_in_the_clear_says_so() -> None:
    from lepton_ai.privacy.flower import is_loopback

    assert is_loopback("127.0.0.1:8080") and is_loopback("localhost:1") and is_loopback("[::1]:8080")
    assert not is_loopback("0.0.0.0:8080") and not is_loopback("server.example:8080")
    # no client comes: the server ends after its round timeout
    server = fl("server", "--address", f"0.0.0.0:{free_port()}", "--rounds", "1", "--round-timeout", "1")
    _, err = finish(server, 120)
    assert server.returncode == 2, err[-2000:]
    assert err.splitlines()[0].startswith("note: the federation at 0.0.0.0:") and "in the clear" in err
