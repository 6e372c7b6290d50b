"""Shared fixtures: a private LEPTON_HOME per test, a real PostgreSQL server per session, and Photon
servers on free loopback ports."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from lepton_ai.store import db


@pytest.fixture(autouse=True)
def lepton_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own empty LEPTON_HOME, registry and artifact store."""
    home = tmp_path / "lepton-home"
    monkeypatch.setenv("LEPTON_HOME", str(home))
    monkeypatch.delenv("LEPTON_DB_URL", raising=False)
    monkeypatch.delenv("LEPTON_ARTIFACTS", raising=False)
    monkeypatch.delenv("LEPTON_TOKEN", raising=False)
    yield home
    db.dispose_all()


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(tool: str) -> str | None:
    found = shutil.which(tool) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))[-1:]
    return found if isinstance(found, str) else (found[0] if found else None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL server on a free loopback port; yield its base URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: `apt-get install postgresql`")
    prefix: list[str] = []
    data_root = Path(tempfile.mkdtemp(prefix="lepton-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as its own user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(data_root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = data_root / "data", free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "lepton", "--no-sync"],
                   check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data_root} -c fsync=off -c max_connections=200"
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(data_root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://lepton@127.0.0.1:{port}"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data_root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """Return the URL of a new, empty database on the session's PostgreSQL server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    for _ in range(50):  # the server may still be finishing its start-up
        try:
            with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.OperationalError:
            time.sleep(0.1)
    return f"{postgres_server}/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, lepton_home: Path) -> str:
    """The metadata database URL, once for SQLite and once for a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{lepton_home / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@contextlib.contextmanager
def running(photon: Any, ready: bool = True, port: int | None = None, **settings: Any) -> Iterator[str]:
    """Serve `photon` in a background thread; yield its base URL; stop it at the end."""
    from lepton_ai.serve import ServeSettings, Service

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(Service(photon, ServeSettings(**settings)), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz" if ready else f"{url}/healthz").status_code in ((200,) if ready else (200, 500)):
                break
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    else:
        raise RuntimeError("the test server did not come up")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def serve() -> Callable[..., Any]:
    """`with serve(photon, **settings) as url:` runs a real server (a Photon on uvicorn) for the test."""
    return running
