"""The Flower server of a federation (`lepton fl server`): `LeptonStrategy` runs our aggregation and
client-level DP over the clients' updates (none of which it trusts), tests the global model on the server's
test split after every round and registers the final one; `run_server` serves it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.models import LeptonModel
from lepton_ai.models.architectures import ARCHITECTURES
from lepton_ai.privacy.aggregation import ClientDP, Strategy, aggregate, finite, parse_strategy
from lepton_ai.privacy.defaults import FEDERATED_DEFAULTS
from lepton_ai.privacy.federated import Setup, prepare
from lepton_ai.privacy.flower import (
    check_address,
    fit_config,
    from_ndarrays,
    import_flower,
    sample_clients,
    server_certificates,
    to_ndarrays,
)
from lepton_ai.privacy.record import FederatedResult, RunRecord, default_name

log = logging.getLogger("lepton.fl")


@dataclass(frozen=True)
class Counted:
    """A round's updates that count, each with its example weight (bounded), and how many were capped."""

    updates: list[tuple[dict[str, torch.Tensor], int]]
    capped: int


def _round_figures(counted: Counted, attempted: int) -> dict[str, int]:
    """Return a round's figures: clients whose update counted, failures (of `attempted`), examples, and the
    example counts cut to the cap."""
    return {
        "clients": len(counted.updates),
        "failures": attempted - len(counted.updates),
        "examples": sum(n for _, n in counted.updates),
        "capped": counted.capped,
    }


def _updates(results: list[tuple[Any, int]], like: Mapping[str, torch.Tensor], max_examples: int) -> Counted:
    """Return the clients' updates (Flower Parameters and example counts) that decode, fit the model `like`
    and are finite, each weighted by min(examples, `max_examples`). Anything else is that client's failure
    of the round: a client's bytes are not trusted, nor the count that weights its update."""
    from flwr.common import parameters_to_ndarrays

    fitting, capped = [], 0
    for parameters, examples in results:
        try:
            state = from_ndarrays(parameters_to_ndarrays(parameters), like)
        # whatever the bytes are (not NumPy's format, pickled objects, cut short): that client failed
        except Exception as e:
            log.warning("a client's update was refused: %s: %s", type(e).__name__, e)
            continue
        if not isinstance(examples, int) or examples < 1:
            log.warning("a client's update was refused: it reports %r examples", examples)
            continue
        if not finite([(state, examples)])[0]:
            log.warning("a client's update was refused: it is not finite")
            continue
        capped += examples > max_examples
        fitting.append((state, min(examples, max_examples)))
    return Counted(fitting, capped)


def lepton_strategy(
    run: Setup,
    *,
    record: RunRecord,
    min_clients: int,
    round_timeout: float | None,
    max_examples: int = FEDERATED_DEFAULTS["max_client_examples"],
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Return a Flower Strategy that runs `run`'s strategy (and client-level DP) with our aggregation.

    Flower's strategy interface over lepton's `aggregate`: every round samples at least `min_clients`
    connected clients (waiting up to the round timeout for them), accepts the failures of some (the round
    goes on with the others; an update that does not decode, fit the model or is not finite, or that reports
    fewer than one example, counts as one; example counts weigh at most `max_examples`), and
    tests the new global model on the server's test split. Under client-level DP it samples exactly
    `min_clients` and divides by that fixed, public number. An error is kept in `error` and ends the
    remaining rounds at once (raised inside Flower, it would leave the clients' connections open);
    `run_server` raises it afterwards."""
    flwr = import_flower()
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

    model, o, dp = run.net, run.options, run.dp
    # under client-level DP the sum is divided by the fixed, public number of clients sampled
    combine = partial(
        aggregate, run.strategy, weights=run.weights, dp=dp, expected_clients=float(min_clients)
    )

    # Flower is imported only when a server starts: its base class is known only here
    base: Any = flwr.server.strategy.Strategy

    class LeptonStrategy(base):
        def __init__(self) -> None:
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.noise = torch.Generator().manual_seed(o["seed"] + 1)
            self.meta = json.dumps(model.metadata())
            self.round_started = time.perf_counter()
            self.error: LeptonError | None = None
            self.last: dict[str, int] = {}

        def initialize_parameters(self, client_manager: Any) -> Any:
            return ndarrays_to_parameters(to_ndarrays(self.state))

        def configure_fit(
            self, server_round: int, parameters: Any, client_manager: Any
        ) -> list[tuple[Any, Any]]:
            self.round_started, self.last = time.perf_counter(), {}
            if self.error is not None:
                return []
            fraction = None if dp is not None else o["fraction"]
            try:
                chosen = sample_clients(client_manager, server_round, min_clients, round_timeout, fraction)
            except LeptonError as e:
                self.error = e
                return []
            return [(c, FitIns(parameters, fit_config(run, server_round, self.meta))) for c in chosen]

        def aggregate_fit(
            self, server_round: int, results: list[tuple[Any, Any]], failures: list[Any]
        ) -> tuple[Any, dict[str, Any]]:
            counted = _updates([(r.parameters, r.num_examples) for _, r in results], self.state, max_examples)
            self.last = _round_figures(counted, attempted=len(results) + len(failures))
            if not counted.updates and dp is None:
                # every client failed: the global model stays as it was
                return None, dict(self.last)
            self.state = combine(self.state, counted.updates, generator=self.noise)
            return ndarrays_to_parameters(to_ndarrays(self.state)), dict(self.last)

        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list:
            # the server tests the global model itself, on its test split
            return []

        def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> tuple[float, dict[str, Any]] | None:
            if server_round == 0 or self.error is not None or not self.last:
                # no round ran: nothing new to test
                return None
            model.load_state_dict(from_ndarrays(parameters_to_ndarrays(parameters), self.state))
            extra = {"epsilon": dp.epsilon_spent(1.0, server_round)} if dp is not None else {}
            try:
                row = record.log_round(
                    model, run.test, **self.last, seconds=time.perf_counter() - self.round_started, **extra
                )
            except LeptonError as e:
                # e.g. the global model diverged
                self.error = e
                return None
            if on_round is not None:
                on_round(row)
            return row["loss"], {"accuracy": row["accuracy"]}

    return LeptonStrategy()


def run_server(
    address: str,
    *,
    model: str | LeptonModel | None = None,
    data: str = "digits",
    rounds: int = 3,
    min_clients: int = 2,
    strategy: str | Strategy = FEDERATED_DEFAULTS["strategy"],
    fraction: float = 1.0,
    local_epochs: int = FEDERATED_DEFAULTS["local_epochs"],
    lr: float = FEDERATED_DEFAULTS["lr"],
    batch_size: int = FEDERATED_DEFAULTS["batch_size"],
    schedule: str | None = None,
    dp: ClientDP | Mapping[str, Any] | None = None,
    seed: int = 0,
    name: str | None = None,
    round_timeout: float | None = 600.0,
    max_client_examples: int = FEDERATED_DEFAULTS["max_client_examples"],
    certificates: Path | str | None = None,
    secure_aggregation: bool = False,
    shares: int | None = None,
    threshold: int | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> FederatedResult:
    """Serve a federation at `address` (HOST:PORT) for `rounds` rounds of at least `min_clients` clients,
    testing the global model on `data`'s test split after each, and register the final model; over TLS with
    the `certificates` folder (ca.crt, server.pem, server.key: docs/federated.md). With
    `secure_aggregation`, Flower's SecAgg+ (`lepton_ai.privacy.secure`): each client's update is masked,
    shared with `shares` clients (default all), and the round survives dropouts while `threshold`
    (default a majority of `shares`) remain."""
    import_flower()

    if dp is not None and fraction < 1:
        raise InvalidInputError(
            "client-level DP over the network takes exactly --min-clients clients each round "
            "(accounted at sample rate 1) and divides by that number: use --fraction 1"
        )
    check_address(address)
    if max_client_examples < 1:
        raise InvalidInputError(f"max_client_examples must be at least 1, not {max_client_examples}")
    tls = server_certificates(certificates) if certificates is not None else None
    secure = secure_shares(min_clients, strategy, shares, threshold) if secure_aggregation else None
    run = prepare(
        model,
        data,
        clients=min_clients,
        rounds=rounds,
        fraction=fraction,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        strategy=strategy,
        schedule=schedule,
        dp=dp,
        seed=seed,
    )
    if getattr(run.net, "arch", None) not in ARCHITECTURES:
        raise InvalidInputError(
            f"clients build the model from its architecture's name: use one of "
            f"{', '.join(ARCHITECTURES)} (or a registered model of one), not {run.net.arch!r}"
        )
    params = run.params(
        partition="clients' own", address=address, **({"secure_aggregation": secure} if secure else {})
    )
    with RunRecord(name or default_name(run.model, data), params) as record:
        if secure is not None:
            from lepton_ai.privacy.secure import plan_of, serve_secure

            plan = plan_of(
                run,
                min_clients=min_clients,
                round_timeout=round_timeout,
                max_examples=max_client_examples,
                **secure,
            )
            state = serve_secure(
                run, record, address, plan=plan, certificates=certificates, on_round=on_round
            )
        else:
            state = _serve_plain(
                run, record, address, tls, min_clients, round_timeout, max_client_examples, on_round
            )
        run.net.load_state_dict(state)
        clients = max([min_clients] + [row["clients"] + row["failures"] for row in record.history])
        privacy = run.dp.report(1.0, len(record.history)) if run.dp else None
        if privacy is not None and secure is not None:
            # the server cannot see, so cannot clip, one update
            privacy["clipping"] = "on the clients, under secure aggregation"
        return record.finish(run.net, clients, privacy)


def _serve_plain(
    run: Setup,
    record: RunRecord,
    address: str,
    tls: tuple[bytes, bytes, bytes] | None,
    min_clients: int,
    round_timeout: float | None,
    max_examples: int,
    on_round: Callable[[dict[str, Any]], None] | None,
) -> dict[str, torch.Tensor]:
    """Serve `run`'s federation at `address` with Flower's `start_server`; return the last global state."""
    flwr = import_flower()
    fl_strategy = lepton_strategy(
        run,
        record=record,
        min_clients=min_clients,
        round_timeout=round_timeout,
        max_examples=max_examples,
        on_round=on_round,
    )
    try:
        flwr.server.start_server(
            server_address=address,
            strategy=fl_strategy,
            config=flwr.server.ServerConfig(num_rounds=run.options["rounds"], round_timeout=round_timeout),
            certificates=tls,
        )
    except SystemExit as e:
        # Flower exits with a message when it cannot bind the address
        if not isinstance(e.code, str):
            raise
        raise LeptonError(f"cannot serve the federation at {address}: {e.code}") from None
    if fl_strategy.error is not None:
        raise fl_strategy.error
    state: dict[str, torch.Tensor] = fl_strategy.state
    return state


def secure_shares(
    min_clients: int, strategy: str | Strategy, shares: int | None, threshold: int | None
) -> dict[str, Any]:
    """Return SecAgg+'s plan options (`secure`, `shares`, `threshold`) checked; refuse what it cannot run."""
    if min_clients < 3:
        raise InvalidInputError(
            "secure aggregation needs --min-clients 3 or more (with two, each learns the other's update "
            "from the average)"
        )
    if parse_strategy(strategy).trim:
        raise InvalidInputError(
            "a trimmed mean needs each client's update, which secure aggregation hides: "
            "use fedavg, fedprox, fedavgm or fedadam"
        )
    shares = min_clients if shares is None else shares
    threshold = shares // 2 + 1 if threshold is None else threshold
    if not 2 < shares <= min_clients or not 1 < threshold < shares:
        raise InvalidInputError(
            f"--shares {shares} --threshold {threshold}: need 3 ≤ shares ≤ --min-clients ({min_clients}) "
            "and 2 ≤ threshold < shares (a round survives shares − threshold dropouts)"
        )
    return {"secure": True, "shares": shares, "threshold": threshold}
