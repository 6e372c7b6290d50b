"""Federations of real processes for the tests: `lepton fl server` and `lepton fl client` started as
their own processes, waited for and read."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lepton_ai.machine import free_port


def fl(*args: str) -> subprocess.Popen:
    """Start `lepton fl ARGS` as its own process (its own session, so a kill reaches only it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lepton_ai.cli.fl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def listening(address: str, server: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the server accepts connections, so clients join at once rather than after a retry's
    back-off."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.1)
    died = server.stderr.read()[-2000:] if server.poll() is not None else ""
    raise AssertionError(f"the server is not listening at {address}: {died}")


def fl_server(*args: str) -> tuple[str, subprocess.Popen]:
    """Start `lepton fl server ARGS` on a free loopback port; return its address and process once it
    listens."""
    address = f"127.0.0.1:{free_port()}"
    server = fl("server", "--address", address, *args)
    listening(address, server)
    return address, server


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish: {err[-2000:]}") from None


def report(home: Path) -> dict:
    (path,) = (home / "reports" / "federated").glob("*/report.json")
    return json.loads(path.read_text())


def certificates(folder: Path) -> Path:
    """Make a certificate authority and a server certificate for 127.0.0.1, as docs/federated.md does."""
    folder.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        *"req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2".split(), "-subj", "/CN=CA"
    )
    openssl(*"req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost".split())
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        *"x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.pem -days 2".split(),
        *"-extfile san.ext".split(),
    )
    return folder
