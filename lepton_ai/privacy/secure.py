"""Secure aggregation over the network (`lepton fl server|client --secure-aggregation`): Flower's SecAgg+
workflow on the server and its client mod on each client, so that the server only ever handles masked
updates.

SecAgg+ speaks Flower's Message API, which the `start_server` / `start_client` path of a plain federation
cannot carry (docs/design/secure-aggregation.md). So the server runs Flower's `DefaultWorkflow` with its
`SecAggPlusWorkflow` in its own process, over a grid whose messages travel one TCP connection a client
(`relay`), and each client answers them with the ClientApp of `secure_apps`. The server tests and records
each round's global state as a plain federation does, and registers the last one.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lepton_ai.privacy.federated import Setup
from lepton_ai.privacy.flower import check_client
from lepton_ai.privacy.record import RunRecord
from lepton_ai.privacy.relay import RelayGrid, client_tls, connect, serve_client, server_tls

if TYPE_CHECKING:
    from collections.abc import Callable

    from lepton_ai.privacy.secure_apps import Plan, RoundDone


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
    """Serve `run`'s federation at `address` by `plan` (`plan_of`); test and record each round's global
    state; return the last one."""
    from flwr.app import Context, RecordDict
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from lepton_ai.privacy.secure_apps import SecureStrategy, check_reply

    state = {k: v.detach().cpu().clone() for k, v in run.net.state_dict().items()}

    def log_round(done: RoundDone) -> None:
        nonlocal state
        state = done.state if done.state is not None else state
        run.net.load_state_dict(state)
        figures = {
            k: done.figures[k]
            for k in ("clients", "failures", "examples", "updates_seen")
            if k in done.figures
        }
        extra = {"epsilon": run.dp.epsilon_spent(1.0, done.round)} if run.dp is not None else {}
        seconds = done.figures.get("seconds", 0.0)
        row = record.log_round(run.net, run.test, **figures, seconds=seconds, **extra)
        if on_round is not None:
            on_round(row)

    strategy = SecureStrategy(plan, state, log_round)
    fit = (
        SecAggPlusWorkflow(
            num_shares=plan.shares,
            reconstruction_threshold=plan.threshold,
            # each client weighs min(examples, the cap): the cap is the largest weight
            max_weight=float(plan.max_examples if plan.dp is None else 1),
            timeout=plan.timeout,
        )
        if plan.secure
        else None
    )
    legacy = LegacyContext(
        context=Context(1, 0, {}, RecordDict(), {}),
        config=ServerConfig(num_rounds=plan.rounds),
        strategy=strategy,
    )
    # a reply, masked or not, is at most a few numbers per weight (SecAgg+ sends 64-bit integers)
    max_frame = 16 * strategy.size + (16 << 20)
    tls = _server_tls(certificates)
    with RelayGrid(address, tls=tls, timeout=plan.timeout, max_frame=max_frame, check=check_reply) as grid:
        DefaultWorkflow(fit_workflow=fit)(grid, legacy)
        strategy.close_round(plan.rounds)
    return state


def _server_tls(certificates: Path | str | None) -> ssl.SSLContext | None:
    """Return the TLS context for the `certificates` folder (ca.crt, server.pem, server.key), if any."""
    from lepton_ai.privacy.flower import server_certificates

    if certificates is None:
        return None
    server_certificates(certificates)
    root = Path(certificates).resolve()
    return server_tls(str(root / "server.pem"), str(root / "server.key"))


# -- the client -----------------------------------------------------------------------------------


def run_secure_client(
    server: str,
    data: str,
    *,
    partition: str = "iid",
    seed: int = 0,
    device: str = "cpu",
    connect_timeout: float = 60.0,
    root_certificates: Path | str | None = None,
) -> int:
    """Join the secure-aggregation federation at `server`, training on `data` (PATH or NAME:I/N) until the
    server ends it; return the number of examples this client holds."""
    from lepton_ai.privacy.secure_apps import client_app, client_for

    check_client(server, root_certificates)
    node = {"data": data, "partition": partition, "seed": int(seed), "device": device}
    # loaded (and checked) before joining; the client app's messages find it loaded
    examples = len(client_for(node).data)
    tls = client_tls(str(root_certificates)) if root_certificates is not None else None
    joined = connect(server, tls=tls, timeout=connect_timeout)
    with joined.sock:
        serve_client(joined, client_app, node)
    return examples
