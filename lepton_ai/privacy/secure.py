"""Secure aggregation over the network (`lepton fl server|client --secure-aggregation`): Flower's SecAgg+
on Flower's own engine, so that the server only ever handles masked updates.

SecAgg+ speaks Flower's Message API, which the `start_server` / `start_client` path of a plain federation
cannot carry (docs/design/secure-aggregation.md). So the server runs a Flower SuperLink at its address and
submits the app of `lepton_ai.privacy.secure_apps` to it (`flwr run`); each client runs a SuperNode
that joins it. The server's process tests each round's global state as the app writes it, and registers
the last one, exactly as a plain federation does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from lepton_ai.device import torch_threads
from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.machine import free_port
from lepton_ai.privacy.engine import Tail, run_tasks
from lepton_ai.privacy.federated import Setup
from lepton_ai.privacy.flower import check_client, client_data
from lepton_ai.privacy.record import RunRecord

if TYPE_CHECKING:
    from lepton_ai.privacy.secure_apps import Plan

# the app `flwr run` submits: its components are this package's, installed where the SuperLink runs
APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "lepton-secure-fl"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "lepton-ai"

[tool.flwr.app.components]
serverapp = "lepton_ai.privacy.secure_apps:server_app"
clientapp = "lepton_ai.privacy.secure_apps:client_app"

[tool.flwr.app.config]
run-dir = ""
"""

# a client leaves once the server has been unreachable this long: the server has ended the federation
LEAVE_AFTER_S = 10.0


def flower_command(name: str) -> str:
    """Return the path of Flower's command `name`, from this Python's environment first."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise InvalidInputError(f"no {name} command: pip install 'lepton-ai[fl]' in this environment")
    return found


def flower_env(home: Path | str) -> dict[str, str]:
    """Return the environment for Flower's processes: its home `home`, and this Python's commands first on
    the PATH (a SuperLink or SuperNode starts more of them by name)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # Flower's telemetry as lepton_ai.privacy set it: off unless asked for
    return {**os.environ, "FLWR_HOME": str(home), "PATH": path, "PYTHONUNBUFFERED": "1"}


def start(component: str, options: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start Flower's `component` (superlink or supernode) with `options` in its own session, tied to this
    process (`lepton_ai.privacy.engine`), its output to the file `log`."""
    command = [sys.executable, "-m", "lepton_ai.privacy.engine", component, *options]
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def stop(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Stop a process started in its own session and all it started: SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        # SIGKILL follows even once the process has exited: what it started may outlive it
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
    process.wait()


def tls_files(certificates: Path | str | None) -> list[str]:
    """Return the SuperLink's TLS options for the `certificates` folder (ca.crt, server.pem, server.key)."""
    from lepton_ai.privacy.flower import server_certificates

    if certificates is None:
        return ["--insecure"]
    server_certificates(certificates)
    root = Path(certificates).resolve()
    return [
        "--ssl-ca-certfile",
        str(root / "ca.crt"),
        "--ssl-certfile",
        str(root / "server.pem"),
        "--ssl-keyfile",
        str(root / "server.key"),
    ]


class SuperLink:
    """A Flower SuperLink serving the federation at HOST:PORT from the run's `folder` (Flower's home, the
    app, the plan and the events), in its own session; stopped on leaving `with`."""

    def __init__(self, folder: Path, address: str, certificates: Path | str | None) -> None:
        self.folder, self.address, self.certificates = folder, address, certificates
        self.env = flower_env(folder / "flwr")
        self.log_path = folder / "superlink.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SuperLink:
        host, _, port = self.address.rpartition(":")
        self._write_app()
        options = [*tls_files(self.certificates), "--disable-runtime-dependency-installation"]
        self.process = start("superlink", [*options, "--host", host, "--port", port], self.env, self.log_path)
        try:
            self._wait_listening(host, int(port))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop(self.process)

    def _write_app(self) -> None:
        app = self.folder / "app"
        app.mkdir(parents=True, exist_ok=True)
        (app / "pyproject.toml").write_text(APP_TOML)
        home = self.folder / "flwr"
        home.mkdir(exist_ok=True)
        connect = (
            "insecure = true"
            if self.certificates is None
            else f"root-certificates = {json.dumps(str(Path(self.certificates).resolve() / 'ca.crt'))}"
        )
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "lepton"\n\n[superlink.lepton]\n'
            f"address = {json.dumps(self.address)}\n{connect}\n"
        )

    def _wait_listening(self, host: str, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LeptonError(f"cannot serve the federation at {self.address}: {self.last_log()}")
            if "Uvicorn running" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise LeptonError(f"the Flower SuperLink did not start within {timeout:g} s: {self.last_log()}")

    def last_log(self, lines: int = 3) -> str:
        """Return the SuperLink's last log lines, for an error."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "(no log)"

    def submit(self) -> None:
        """Start the run: `flwr run` sends the app to the SuperLink, which starts the server app."""
        done = subprocess.run(
            [flower_command("flwr"), "run", str(self.folder / "app"), "lepton"]
            + ["--run-config", f"run-dir={json.dumps(str(self.folder))}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LeptonError(f"flwr run could not start the federation: {detail[0]}")

    def events(self, stall_s: float) -> Iterator[dict[str, Any]]:
        """Yield the run's events (rounds, then the end) as the server app writes them; raise when it fails,
        the SuperLink dies, or nothing comes for `stall_s` seconds."""
        from lepton_ai.privacy.secure_apps import EVENTS_FILE

        tail, last = Tail(self.folder / EVENTS_FILE), time.monotonic()
        while True:
            for line in tail.read().splitlines():
                event = json.loads(line)
                if "error" in event:
                    raise LeptonError(f"the federation's server app failed: {event['error']}")
                yield event
                if event.get("finished"):
                    return
                last = time.monotonic()
            if self.process is not None and self.process.poll() is not None:
                raise LeptonError(f"the Flower SuperLink stopped: {self.last_log()}")
            if time.monotonic() - last > stall_s:
                raise LeptonError(f"no round finished within {stall_s:g} s: {self.last_log()}")
            time.sleep(0.1)


def plan_of(
    run: Setup, *, min_clients: int, round_timeout: float | None, max_examples: int, **secure: Any
) -> Plan:
    """Return the server app's plan for `run` (`secure`: secure, shares, threshold)."""
    from lepton_ai.privacy.flower import fit_config
    from lepton_ai.privacy.secure_apps import Plan

    o, meta = run.options, json.dumps(run.net.metadata())
    clip = run.dp.clip if run.dp is not None else 0.0
    configs = [
        {**fit_config(run, r, meta), "dp_clip": clip, "max_examples": max_examples}
        for r in range(1, o["rounds"] + 1)
    ]
    strategy = {k: v for k, v in asdict(run.strategy).items() if k != "state"}
    return Plan(
        rounds=o["rounds"],
        min_clients=min_clients,
        strategy=strategy,
        configs=configs,
        weights=run.weights,
        max_examples=max_examples,
        timeout=round_timeout,
        fraction=None if run.dp is not None else o["fraction"],
        dp=asdict(run.dp) if run.dp is not None else None,
        **secure,
    )


def serve_secure(
    run: Setup,
    record: RunRecord,
    address: str,
    *,
    plan: Plan,
    certificates: Path | str | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Serve `run`'s federation at `address` by `plan` (`plan_of`) on a Flower SuperLink; test and record
    each round's global state; return the last one."""
    from safetensors.torch import load_file

    state = {k: v.detach().cpu().clone() for k, v in run.net.state_dict().items()}
    stall = 4 * (plan.timeout or 600.0) + 120
    with (
        tempfile.TemporaryDirectory(prefix="lepton-fl-") as tmp,
        SuperLink(Path(tmp), address, certificates) as link,
    ):
        plan.write(Path(tmp), state)
        link.submit()
        for event in link.events(stall):
            if "round" not in event:
                continue
            if "state" in event:
                state = load_file(str(Path(tmp) / event["state"]))
            run.net.load_state_dict(state)
            figures = {k: event[k] for k in ("clients", "failures", "examples", "updates_seen") if k in event}
            extra = {"epsilon": run.dp.epsilon_spent(1.0, event["round"])} if run.dp is not None else {}
            row = record.log_round(run.net, run.test, **figures, seconds=event.get("seconds", 0.0), **extra)
            if on_round is not None:
                on_round(row)
    return state


# -- the client -----------------------------------------------------------------------------------


def wait_reachable(address: str, timeout: float) -> None:
    """Wait until HOST:PORT accepts connections; raise after `timeout` seconds."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise LeptonError(
                    f"could not reach the Flower server at {address} within {timeout:g} s: {e}"
                ) from None
            time.sleep(0.5)


def run_secure_client(
    server: str,
    data: str,
    *,
    partition: str = "iid",
    seed: int = 0,
    device: str = "cpu",
    connect_timeout: float = 60.0,
    root_certificates: Path | str | None = None,
    log: IO[str] | None = None,
) -> int:
    """Join the secure-aggregation federation at `server` as a Flower SuperNode training on `data` (PATH or
    NAME:I/N) until the server ends it; return the number of examples this client holds. Flower's log goes to
    `log` if given."""
    check_client(server, root_certificates)
    # on one thread: OpenMP's threads, once started, do not survive the forks that run the tasks
    with torch_threads(1):
        examples = len(client_data(data, partition, seed))
    wait_reachable(server, connect_timeout)
    node = " ".join(
        f"{k}={json.dumps(v)}" for k, v in (("data", data), ("partition", partition), ("device", device))
    )
    tls = (
        ["--insecure"]
        if root_certificates is None
        else ["--root-certificates", str(Path(root_certificates).resolve())]
    )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lepton-fl-node-") as home:
        node_log = Path(home) / "supernode.log"
        options = [*tls, "--superlink", server, "--isolation", "process", "--port", str(port)]
        options += ["--node-config", f"{node} seed={int(seed)}", "--max-wait-time", str(LEAVE_AFTER_S)]
        process = start("supernode", options, flower_env(home), node_log)
        try:
            # imported here, once, for every task's fork
            import lepton_ai.privacy.secure_apps  # noqa: F401

            run_tasks(f"127.0.0.1:{port}", process, Tail(node_log, log))
        finally:
            stop(process)
    return examples
