"""Shared fixtures: a private LEPTON_HOME per test, a real PostgreSQL server per session, and Photon
servers on free loopback ports."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn

from lepton_ai.machine import free_port  # noqa: F401  (tests import it from here)
from lepton_ai.store import db
from tests.fake_kubernetes import FakeAPI, kubeconfig
from tests.serving import TINY_PHOTON, RecordedServer


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


def _pg_bin(tool: str) -> str | None:
    found = shutil.which(tool) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))[-1:]
    return found if isinstance(found, str) else (found[0] if found else None)


@dataclasses.dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway PostgreSQL server: its base URL and how to run pg_ctl on it."""

    url: str
    ctl: Callable[..., None]


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a throwaway PostgreSQL server on a free loopback port (skipping without one); stop it after."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: `apt-get install postgresql`")
    prefix: list[str] = []
    data_root = Path(tempfile.mkdtemp(prefix="lepton-pg-"))
    # postgres refuses to run as root: run it as its own user
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(data_root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = data_root / "data", free_port()
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "lepton", "--no-sync"],
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data_root} -c fsync=off -c max_connections=200"

    def ctl(*args: str) -> None:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(data_root / "log"), *args],
            check=True,
            capture_output=True,
        )

    ctl("-w", "start")
    try:
        yield PostgresCluster(f"postgresql+psycopg://lepton@127.0.0.1:{port}", ctl)
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data_root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL server on a free loopback port; yield its base URL."""
    with postgres_cluster() as cluster:
        yield cluster.url


def new_database(server_url: str) -> str:
    """Create a new, empty database on the PostgreSQL server at `server_url`; return its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    # the server may still be finishing its start-up
    for _ in range(50):
        try:
            with psycopg.connect(server_url.replace("+psycopg", "") + "/postgres", autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.OperationalError:
            time.sleep(0.1)
    return f"{server_url}/{name}"


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """Return the URL of a new, empty database on the session's PostgreSQL server."""
    return new_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, lepton_home: Path) -> str:
    """The metadata database URL, once for SQLite and once for a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{lepton_home / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@contextlib.contextmanager
def running(photon: Any, ready: bool = True, port: int | None = None, **settings: Any) -> Iterator[str]:
    """Serve `photon` in a background thread; yield its base URL; stop it at the end."""
    from lepton_ai.serve import ServeSettings, Service, http

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Service(photon, ServeSettings(**settings)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=5,
            http=http.protocol(),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz" if ready else f"{url}/healthz").status_code in (
                (200,) if ready else (200, 500)
            ):
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
def tiny_photon(tmp_path: Path) -> str:
    """Return `path.py:Tiny`, a tiny Photon: POST /square {"x": 3} answers 9, a negative x a 500."""
    path = tmp_path / "tiny.py"
    path.write_text(TINY_PHOTON)
    return f"{path}:Tiny"


@pytest.fixture
def recorded_server() -> type[RecordedServer]:
    """`with recorded_server([TARGET, *options]) as server:` runs `lepton serve` on a port the system chooses;
    `server.info` is the record it wrote, `server.record()` that record now."""
    return RecordedServer


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], ModuleType]:
    """`benchmark_script("serve")` is benchmarks/serve.py imported as when it runs (its folder importable,
    for common.py), so tests can exercise a benchmark's measuring code."""
    folder = Path(__file__).parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))

    @functools.cache
    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def serve() -> Callable[..., Any]:
    """`with serve(photon, **settings) as url:` runs a real server (a Photon on uvicorn) for the test."""
    return running


class RayCluster:
    """A real local Ray cluster: `address` (HOST:PORT) for ray.init and Ray Serve, `dashboard_url` for the
    Jobs API. Token authentication is on; RAY_AUTH_MODE and RAY_AUTH_TOKEN are set for the whole session."""

    def __init__(self, address: str, dashboard_url: str, token: str, temp_dir: Path) -> None:
        self.address, self.dashboard_url, self.token, self.temp_dir = address, dashboard_url, token, temp_dir

    def __repr__(self) -> str:
        return f"RayCluster({self.address}, dashboard {self.dashboard_url})"


def _stop_session(sid: int, grace: float = 3.0) -> None:
    """Stop every process of session `sid` (one cluster's, unlike `ray stop`, which stops all of the
    user's)."""
    import signal

    def members() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == sid and not _zombie(int(entry)):
                    found.append(int(entry))
            except OSError:
                pass
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while members() and time.monotonic() < deadline:
            time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """Start a Ray head on free loopback ports (2 CPUs, a dashboard, a temp dir of its own) for the
    session."""
    import importlib.util
    import secrets
    import sys

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed: pip install 'lepton-ai[ray]'")

    temp_dir = Path(tempfile.mkdtemp(prefix="lepton-ray-"))
    port, dashboard, client, agent = (free_port() for _ in range(4))
    token = secrets.token_hex(32)
    with pytest.MonkeyPatch.context() as mp:
        # Ray's default for new clusters; drivers and job clients read these
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN", token)
        mp.delenv("RAY_ADDRESS", raising=False)
        # Ray read RAY_AUTH_MODE when it was imported (by a test module): read it again
        if "ray" in sys.modules:
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        # Replicas and jobs must get the registry from what they are given, never from the cluster's own
        # environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_")}
        env["LEPTON_HOME"] = str(temp_dir / "not-the-test-home")
        # As on a real cluster, the cluster's `python` and `lepton` are the ones with lepton-ai installed.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        cmd = [
            ray,
            "start",
            "--head",
            "--port",
            str(port),
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(client),
            "--dashboard-agent-listen-port",
            str(agent),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "true",
            "--disable-usage-stats",
            "--temp-dir",
            str(temp_dir),
        ]
        # A session of its own: every process of this cluster (workers too) is found by its session id at the
        # end.
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"ray start failed: {out.decode(errors='replace')[-3000:]}")
            cluster = RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", token, temp_dir)
            deadline = time.monotonic() + 60
            # the dashboard's HTTP API comes up a little after `ray start` returns
            while True:
                try:
                    if (
                        httpx.get(
                            f"{cluster.dashboard_url}/api/version",
                            timeout=2,
                            headers={"Authorization": f"Bearer {token}"},
                        ).status_code
                        == 200
                    ):
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the Ray dashboard did not come up within 60 s")
                time.sleep(0.2)
            yield cluster
        finally:
            if proc.poll() is None:
                proc.kill()
            _stop_session(proc.pid)
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def digits_ref() -> str:
    """A small cnn-small trained one epoch on digits, registered in this test's LEPTON_HOME: its reference."""
    from lepton_ai import LeptonModel
    from lepton_ai.data import load

    model = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_pretrained_model("cnn-small")
    model.fit(load("digits", "train"), epochs=1, lr=3e-3, progress=False)
    return model.save("digits-cnn")


# Three imbalanced classes of short sentences that a pretrained encoder tells apart at once.
_TOPICS = {
    "network": (
        ["open", "close", "bind"],
        ["a socket", "a TCP connection", "an HTTP request", "the server port"],
    ),
    "files": (["copy", "remove", "rename"], ["a file on disk", "the folder tree", "a temporary directory"]),
    "text": (["split", "format"], ["the string into words", "a paragraph of text"]),
}


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    """A JSONL file of labelled sentences in three imbalanced classes (24, 18 and 8 rows) and its path."""
    rows = [
        {"text": f"{verb.capitalize()} {thing}{end}", "label": label}
        for label, (verbs, things) in _TOPICS.items()
        for verb in verbs
        for thing in things
        for end in (".", " now.")
    ]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `lepton ARGS` in-process: `cli(*args)` returns (exit code, stdout, stderr)."""
    from lepton_ai.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[tuple[type[FakeAPI], Path]]:
    """A fake Kubernetes API server on loopback (tests/fake_kubernetes.py); yield it and a kubeconfig for
    it."""
    FakeAPI.objects, FakeAPI.requests, FakeAPI.pods, FakeAPI.unserved = {}, [], [], "/apis/none/"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield FakeAPI, kubeconfig(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stop_worker() -> Iterator[None]:
    """End, after the test, the worker that `api.submit` started (it would exit once idle; not wait)."""
    from lepton_ai.jobs.processes import worker_pid

    yield
    pid = worker_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
