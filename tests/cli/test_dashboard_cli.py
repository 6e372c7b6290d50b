"""`lepton dashboard`: the REST API over the CLI's registry, never open to other machines by accident."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.jobs.conftest import wait_for


def test_listening_beyond_loopback_needs_a_token(cli) -> None:
    code, _, err = cli("dashboard", "--host", "0.0.0.0")
    assert code == 2 and err.startswith("error: ") and "give a token" in err and err.count("\n") == 1


def test_a_registry_that_cannot_be_read_is_one_line(cli, monkeypatch) -> None:
    monkeypatch.setenv("LEPTON_DB_URL", "postgresql://lepton:hunter2@127.0.0.1:1/nowhere")
    code, _, err = cli("dashboard")
    assert code == 2 and "cannot open the registry at postgresql" in err and "hunter2" not in err


def test_the_dashboard_serves_the_api_with_its_token(digits_ref: str) -> None:
    port = free_port()
    lepton = str(Path(sys.executable).with_name("lepton"))
    env = {"LEPTON_TOKEN": "s3cret", "PATH": str(Path(sys.executable).parent)}

    proc = subprocess.Popen(
        [lepton, "dashboard", "--port", str(port)],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/models"

        def answers() -> httpx.Response | None:
            try:
                return httpx.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=2)
            except httpx.TransportError:
                return None

        models = wait_for(answers, timeout=60).json()["items"]
        assert [m["name"] for m in models] == ["digits-cnn"]
        assert httpx.get(url, timeout=2).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_port_zero_prints_the_port_it_bound_and_read_only_shows_no_action() -> None:
    lepton = str(Path(sys.executable).with_name("lepton"))
    proc = subprocess.Popen(
        [lepton, "dashboard", "--port", "0", "--read-only"],
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("dashboard on ", 1)[1].split("/ ", 1)[0]
        assert not url.endswith(":0"), line
        page = httpx.get(url + "/", timeout=5)
        assert page.status_code == 200 and "read-only" in page.text
        assert httpx.post(url + "/jobs/1/cancel", timeout=5).status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=15)
