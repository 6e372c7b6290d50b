"""Federated learning across processes and machines through Flower (`pip install lepton-ai[fl]`).

`run_server` is a Flower server whose strategy is ours (`LeptonStrategy`: the same `aggregate` and
client-level DP as the simulation, the global model tested on the server's test split after every
round, the final model registered); `run_client` is a Flower client that trains on its own data with
the same `local_train`. They talk over gRPC with Flower's `start_server` / `start_client`: plain
processes, no app bundle to build, nothing to install at run time — the deployment `lepton fl server`
and `lepton fl client` give (Flower marks these two functions deprecated in favour of its SuperLink /
SuperNode / ServerApp stack; they are kept and work in flwr 1.42).

A client's data is `PATH` (a file or folder of its own) or `NAME:I/N`: part I (0-based) of an N-way
partition of data set NAME's training split, e.g. `digits:3/10`; the clients of one federation must
give the same N, `--partition` scheme and `--seed` to get disjoint parts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
import zlib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lepton_ai.data import LabeledData
from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.models import LeptonModel
from lepton_ai.models.architectures import ARCHITECTURES
from lepton_ai.privacy.aggregation import ClientDP, Strategy, aggregate, finite
from lepton_ai.privacy.defaults import FEDERATED_DEFAULTS
from lepton_ai.privacy.federated import Setup, cpu_threads, local_train, prepare, round_lr
from lepton_ai.privacy.record import FederatedResult, RunRecord, default_name

_PART = re.compile(r"(?P<data>.+):(?P<index>\d+)/(?P<count>\d+)")


def _flwr() -> Any:
    try:
        import flwr
    except ImportError as e:
        raise InvalidInputError(
            "federated learning over the network needs Flower: pip install 'lepton-ai[fl]'"
        ) from e
    logger = logging.getLogger("flwr")
    if not any(isinstance(f, _QuietDeprecation) for f in logger.filters):
        logger.addFilter(_QuietDeprecation())
    return flwr


def flower_log(verbose: bool) -> None:
    """Show Flower's own log (INFO and up) when `verbose`, else its warnings and errors only."""
    _flwr()
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.WARNING)


class _QuietDeprecation(logging.Filter):
    """Drop Flower's notice that start_server/start_client are deprecated: we chose them (module
    docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in str(record.msg)


def parse_part(spec: str) -> tuple[str, int | None, int | None]:
    """Return (data, index, count) of "NAME:I/N" (0 ≤ I < N), or (spec, None, None) for a whole data set."""
    m = _PART.fullmatch(str(spec))
    if not m:
        return str(spec), None, None
    index, count = int(m["index"]), int(m["count"])
    if count < 1 or not 0 <= index < count:
        raise InvalidInputError(
            f"--data {spec}: the part must be I/N with 0 ≤ I < N (0-based), "
            f"e.g. {m['data']}:0/{max(count, 1)}"
        )
    return m["data"], index, count


def client_data(spec: str, partition: str = "iid", seed: int = 0) -> LabeledData:
    """Return a client's training data: the whole of PATH, or part I of the N-way `partition` of NAME's train
    split."""
    from lepton_ai.data import load
    from lepton_ai.privacy.partition import partition_indices

    name, index, count = parse_part(spec)
    if index is None or count is None:
        return load(name)
    train = load(name, "train", seed=seed)
    part = partition_indices(train.labels.numpy(), partition, count, seed)[index]
    return train.subset(part, suffix=f"[client {index}/{count}]")


def to_ndarrays(state: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
    """Return a state dict's tensors as NumPy arrays, in its order."""
    return [v.detach().cpu().numpy() for v in state.values()]


def from_ndarrays(arrays: list[np.ndarray], like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return `arrays` as a state dict with the keys, shapes and dtypes of `like`; raise when they do not
    fit."""
    if len(arrays) != len(like) or any(
        tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, like.values())
    ):
        raise InvalidInputError(
            f"the server sent {len(arrays)} tensors that do not fit this model's {len(like)}"
        )
    return {k: torch.from_numpy(np.array(a)).to(v.dtype) for (k, v), a in zip(like.items(), arrays)}


# -- the server ---------------------------------------------------------------------------------


def fit_config(run: Setup, server_round: int, meta: str) -> dict[str, Any]:
    """Return what a client is told for round `server_round`: the model's metadata and the training
    options."""
    o = run.options
    return {
        "model": meta,
        "local_epochs": o["local_epochs"],
        "batch_size": o["batch_size"],
        "mu": run.strategy.mu,
        "lr": round_lr(o["lr"], server_round - 1, o["rounds"], run.schedule),
        "momentum": FEDERATED_DEFAULTS["momentum"],
        "seed": o["seed"] * 1_000_003 + server_round * 10_007,
        "round": server_round,
    }


def _sample_clients(
    client_manager: Any,
    server_round: int,
    min_clients: int,
    round_timeout: float | None,
    fraction: float | None,
) -> list[Any]:
    """Return this round's clients: `fraction` of those connected but at least `min_clients` (exactly that
    many with no fraction, as client-level DP needs); raise when too few connect in time."""
    timeout = round_timeout or 86_400
    if not client_manager.wait_for(min_clients, timeout=math.ceil(timeout)):
        raise LeptonError(
            f"round {server_round}: fewer than {min_clients} clients connected "
            f"within {timeout:g} s (--min-clients, --round-timeout)"
        )
    available = client_manager.num_available()
    wanted = min_clients if fraction is None else max(min_clients, round(fraction * available))
    return list(client_manager.sample(num_clients=min(wanted, available), min_num_clients=min_clients))


def _round_figures(updates: list[tuple[dict[str, torch.Tensor], int]], attempted: int) -> dict[str, int]:
    """Return a round's figures: clients whose update counted, failures (of `attempted`), examples."""
    return {
        "clients": len(updates),
        "failures": attempted - len(updates),
        "examples": sum(n for _, n in updates),
    }


def _updates(
    results: list[tuple[list[np.ndarray], int]], like: Mapping[str, torch.Tensor]
) -> list[tuple[dict[str, torch.Tensor], int]]:
    """Return the clients' updates that fit the model `like` and are finite, with their example counts."""
    fitting = []
    for arrays, examples in results:
        # weights that do not fit the model: a failure
        with contextlib.suppress(InvalidInputError):
            fitting.append((from_ndarrays(arrays, like), int(examples)))
    return finite(fitting)[0]


def lepton_strategy(
    run: Setup,
    *,
    record: RunRecord,
    min_clients: int,
    round_timeout: float | None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Return a Flower Strategy that runs `run`'s strategy (and client-level DP) with our aggregation.

    Flower's strategy interface over lepton's `aggregate`: every round samples at least `min_clients`
    connected clients (waiting up to the round timeout for them), accepts the failures of some (the round
    goes on with the others; an update that does not fit the model or is not finite counts as one), and
    tests the new global model on the server's test split. Under client-level DP it samples exactly
    `min_clients` and divides by that fixed, public number. An error is kept in `error` and ends the
    remaining rounds at once (raised inside Flower, it would leave the clients' connections open);
    `run_server` raises it afterwards."""
    flwr = _flwr()
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
                chosen = _sample_clients(client_manager, server_round, min_clients, round_timeout, fraction)
            except LeptonError as e:
                self.error = e
                return []
            return [(c, FitIns(parameters, fit_config(run, server_round, self.meta))) for c in chosen]

        def aggregate_fit(
            self, server_round: int, results: list[tuple[Any, Any]], failures: list[Any]
        ) -> tuple[Any, dict[str, Any]]:
            updates = _updates(
                [(parameters_to_ndarrays(r.parameters), r.num_examples) for _, r in results], self.state
            )
            self.last = _round_figures(updates, attempted=len(results) + len(failures))
            if not updates and dp is None:
                # every client failed: the global model stays as it was
                return None, dict(self.last)
            self.state = combine(self.state, updates, generator=self.noise)
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
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> FederatedResult:
    """Serve a federation at `address` (HOST:PORT) for `rounds` rounds of at least `min_clients` clients,
    testing the global model on `data`'s test split after each, and register the final model."""
    flwr = _flwr()

    if dp is not None and fraction < 1:
        raise InvalidInputError(
            "client-level DP over the network takes exactly --min-clients clients each round "
            "(accounted at sample rate 1) and divides by that number: use --fraction 1"
        )
    _check_address(address)
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
    params = run.params(partition="clients' own", address=address)
    with RunRecord(name or default_name(run.model, data), params) as record:
        fl_strategy = lepton_strategy(
            run, record=record, min_clients=min_clients, round_timeout=round_timeout, on_round=on_round
        )
        try:
            flwr.server.start_server(
                server_address=address,
                strategy=fl_strategy,
                config=flwr.server.ServerConfig(num_rounds=rounds, round_timeout=round_timeout),
            )
        except SystemExit as e:
            # Flower exits with a message when it cannot bind the address
            if not isinstance(e.code, str):
                raise
            raise LeptonError(f"cannot serve the federation at {address}: {e.code}") from None
        if fl_strategy.error is not None:
            raise fl_strategy.error
        run.net.load_state_dict(fl_strategy.state)
        clients = max([min_clients] + [row["clients"] + row["failures"] for row in record.history])
        return record.finish(run.net, clients, run.dp.report(1.0, len(record.history)) if run.dp else None)


def _check_address(address: str) -> None:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"address {address!r} must be HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")


# -- the client ---------------------------------------------------------------------------------


def lepton_client(data: LabeledData, *, device: str = "cpu", client_seed: int = 0) -> Any:
    """Return a Flower client that trains the server's model on `data` with `local_train`."""
    flwr = _flwr()
    from lepton_ai.data.inputs import check_data
    from lepton_ai.device import resolve_device

    dev = resolve_device(device)

    base: Any = flwr.client.NumPyClient

    class LeptonClient(base):
        """Builds the server's architecture (a built-in one, from the metadata the server sends with each
        round) and checks its data fits, then each round trains it from the global weights on this
        client's data and returns the new weights; the server tests the global model itself, so
        clients are never asked to evaluate."""

        def __init__(self) -> None:
            self.meta: str | None = None
            self.model: LeptonModel | None = None

        def _model(self, meta: str) -> LeptonModel:
            if meta != self.meta:
                net = LeptonModel.from_metadata(json.loads(meta))
                check_data(net, data)
                self.meta, self.model = meta, net
            assert self.model is not None
            return self.model

        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return to_ndarrays(self.model.state_dict()) if self.model is not None else []

        def fit(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict]:
            net = self._model(str(config["model"]))
            state = from_ndarrays(parameters, net.state_dict())
            with cpu_threads(net, dev):
                new, n, metrics = local_train(
                    net,
                    data,
                    state,
                    epochs=int(config["local_epochs"]),
                    lr=float(config["lr"]),
                    batch_size=int(config["batch_size"]),
                    mu=float(config["mu"]),
                    momentum=float(config["momentum"]),
                    seed=int(config["seed"]) + client_seed,
                    device=dev,
                )
            return to_ndarrays(new), n, metrics

    return LeptonClient().to_client()


def run_client(
    server: str,
    data: str,
    *,
    partition: str = "iid",
    seed: int = 0,
    device: str = "cpu",
    connect_timeout: float = 60.0,
) -> int:
    """Join the federation at `server` (HOST:PORT) with the client data `data` (PATH or NAME:I/N) until the
    server ends it; return the number of examples this client holds."""
    flwr = _flwr()
    import grpc

    _check_address(server)
    local = client_data(data, partition, seed)
    name, index, _ = parse_part(data)
    # Each client its own shuffling and dropout: its part's index, or a hash of its data's path.
    client_seed = index if index is not None else zlib.crc32(str(Path(name).resolve()).encode())
    try:
        flwr.client.start_client(
            server_address=server,
            insecure=True,
            max_wait_time=connect_timeout,
            client=lepton_client(local, device=device, client_seed=client_seed),
        )
    except grpc.RpcError as e:
        detail = e.details() if hasattr(e, "details") else str(e)
        raise LeptonError(
            f"lost or could not make the connection to the Flower server at {server}: {detail}"
        ) from e
    return len(local)
