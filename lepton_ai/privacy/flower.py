"""Federated learning across processes and machines through Flower (`pip install lepton-ai[fl]`): what the
server and the clients share (weights as NumPy arrays, addresses, certificates) and the client.

`run_server` (`lepton_ai.privacy.flower_server`) is a Flower server whose strategy is ours
(`LeptonStrategy`: the same `aggregate` and client-level DP as the simulation, the global model tested on
the server's test split after every round, the final model registered); `run_client` is a Flower client
that trains on its own data with the same `local_train`. They talk over gRPC with Flower's
`start_server` / `start_client`: plain processes, no app bundle to build, nothing to install at run
time — the deployment `lepton fl server` and `lepton fl client` give (Flower marks these two functions
deprecated in favour of its SuperLink / SuperNode / ServerApp stack; they are kept and work in flwr 1.42).

A client's data is `PATH` (a file or folder of its own) or `NAME:I/N`: part I (0-based) of an N-way
partition of data set NAME's training split, e.g. `digits:3/10`; the clients of one federation must
give the same N, `--partition` scheme and `--seed` to get disjoint parts.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lepton_ai.data import LabeledData
from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.machine import is_loopback_host
from lepton_ai.models import LeptonModel
from lepton_ai.privacy.defaults import FEDERATED_DEFAULTS
from lepton_ai.privacy.federated import Setup, cpu_threads, local_train, round_lr

_PART = re.compile(r"(?P<data>.+):(?P<index>\d+)/(?P<count>\d+)")


def import_flower() -> Any:
    """Return the `flwr` module (its deprecation notices for the functions we chose filtered out), or say
    how to install it."""
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
    """Show Flower's own log and the secure relay's (INFO and up, on stderr) when `verbose`, else their
    warnings and errors only."""
    import_flower()
    level = logging.INFO if verbose else logging.WARNING
    logging.getLogger("flwr").setLevel(level)
    relay = logging.getLogger("lepton_ai.privacy.relay")
    relay.setLevel(level)
    if verbose and not relay.handlers:
        relay.addHandler(logging.StreamHandler())


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
    fit (their number, a shape, or numbers that are not real: strings, objects, complex)."""
    if len(arrays) != len(like) or any(
        tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, like.values())
    ):
        raise InvalidInputError(f"{len(arrays)} tensors that do not fit the model's {len(like)}")
    kinds = {a.dtype.kind for a in arrays}
    if not kinds <= set("fiub"):
        raise InvalidInputError(f"tensors of {', '.join(sorted(kinds))} kind, not real numbers")
    return {k: torch.from_numpy(np.array(a)).to(v.dtype) for (k, v), a in zip(like.items(), arrays)}


# -- a round, as the server plans it ---------------------------------------------------------


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


def sample_clients(
    client_manager: Any,
    server_round: int,
    min_clients: int,
    round_timeout: float | None,
    fraction: float | None,
) -> list[Any]:
    """Return this round's clients: `fraction` of those connected but at least `min_clients` (exactly that
    many with no fraction, as client-level DP needs); raise when too few connect in time."""
    timeout = round_timeout or 86_400
    if not _wait_for(client_manager, min_clients, timeout):
        raise LeptonError(
            f"round {server_round}: fewer than {min_clients} clients connected "
            f"within {timeout:g} s (--min-clients, --round-timeout)"
        )
    available = client_manager.num_available()
    wanted = min_clients if fraction is None else max(min_clients, round(fraction * available))
    return list(client_manager.sample(num_clients=min(wanted, available), min_num_clients=min_clients))


def _wait_for(client_manager: Any, count: int, timeout: float) -> bool:
    """Return whether `count` clients are connected within `timeout` seconds. Asked through `num_available`:
    under Flower's workflows it is what registers the nodes that joined (else done every 5 s)."""
    deadline = time.monotonic() + timeout
    while client_manager.num_available() < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- addresses and certificates ------------------------------------------------------------


def check_address(address: str) -> None:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"address {address!r} must be HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")


def check_client(server: str, root_certificates: Path | str | None) -> None:
    """Raise, in one line, on a server address that is not HOST:PORT or a CA certificate file that is not
    there."""
    check_address(server)
    if root_certificates is not None and not Path(root_certificates).is_file():
        raise InvalidInputError(f"--root-certificates {root_certificates}: no such file")


def is_loopback(address: str) -> bool:
    """Return whether HOST:PORT listens on this machine's loopback only."""
    return is_loopback_host(str(address).rpartition(":")[0])


# what `lepton fl server --certificates DIR` reads, as Flower's examples and docs/federated.md name them
SERVER_CERTIFICATES = ("ca.crt", "server.pem", "server.key")


def server_certificates(folder: Path | str) -> tuple[bytes, bytes, bytes]:
    """Return the CA certificate, the server's certificate and its private key read from `folder`."""
    root = Path(folder)
    missing = [name for name in SERVER_CERTIFICATES if not (root / name).is_file()]
    if missing:
        raise InvalidInputError(
            f"--certificates {folder}: no {', '.join(missing)} there (make them as docs/federated.md shows)"
        )
    ca, cert, key = ((root / name).read_bytes() for name in SERVER_CERTIFICATES)
    return ca, cert, key


# -- the client ---------------------------------------------------------------------------------


class ModelCache:
    """The server's model as a client builds it: a built-in architecture, from the metadata the server sends
    each round, built again only when that changes, with the client's data checked to fit it."""

    def __init__(self, data: LabeledData) -> None:
        self.data, self.meta = data, ""
        self.model: LeptonModel | None = None

    def __call__(self, meta: str) -> LeptonModel:
        from lepton_ai.data.inputs import check_data

        if meta != self.meta or self.model is None:
            self.model = LeptonModel.from_metadata(json.loads(meta))
            check_data(self.model, self.data)
            self.meta = meta
        return self.model


def lepton_client(data: LabeledData, *, device: str = "cpu", client_seed: int = 0) -> Any:
    """Return a Flower client that trains the server's model on `data` with `local_train`."""
    flwr = import_flower()
    from lepton_ai.device import resolve_device

    dev = resolve_device(device)

    base: Any = flwr.client.NumPyClient

    class LeptonClient(base):
        """Each round trains the server's model (`ModelCache`) from the global weights on this client's
        data and returns the new weights; the server tests the global model itself, so clients are never
        asked to evaluate."""

        def __init__(self) -> None:
            self._model = ModelCache(data)

        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            model = self._model.model
            return to_ndarrays(model.state_dict()) if model is not None else []

        def fit(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict]:
            net = self._model(str(config["model"]))
            state = from_ndarrays(parameters, net.state_dict())
            new, n, metrics = train_round(net, data, state, config, device=dev, client_seed=client_seed)
            return to_ndarrays(new), n, metrics

    return LeptonClient().to_client()


def train_round(
    net: LeptonModel,
    data: LabeledData,
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    device: str | torch.device = "cpu",
    client_seed: int = 0,
) -> tuple[dict[str, torch.Tensor], int, dict[str, float]]:
    """Train `net` from the global `state` on this client's `data` as the round's `config` says; return the
    new state, the number of examples and the training metrics."""
    with cpu_threads(net, device):
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
            device=device,
        )
    return new, n, metrics


def client_seed_of(data: str) -> int:
    """Return the seed that sets a client apart (its shuffling, its dropout): its part's index, or a hash
    of its data's path."""
    name, index, _ = parse_part(data)
    return index if index is not None else zlib.crc32(str(Path(name).resolve()).encode())


def run_client(
    server: str,
    data: str,
    *,
    partition: str = "iid",
    seed: int = 0,
    device: str = "cpu",
    connect_timeout: float = 60.0,
    root_certificates: Path | str | None = None,
) -> int:
    """Join the federation at `server` (HOST:PORT) with the client data `data` (PATH or NAME:I/N) until the
    server ends it, over TLS trusting the CA certificate file `root_certificates` if given; return the
    number of examples this client holds."""
    flwr = import_flower()
    import grpc

    check_client(server, root_certificates)
    ca = Path(root_certificates).read_bytes() if root_certificates is not None else None
    local = client_data(data, partition, seed)
    try:
        flwr.client.start_client(
            server_address=server,
            insecure=ca is None,
            root_certificates=ca,
            max_wait_time=connect_timeout,
            client=lepton_client(local, device=device, client_seed=client_seed_of(data)),
        )
    except grpc.RpcError as e:
        detail = e.details() if hasattr(e, "details") else str(e)
        raise LeptonError(
            f"lost or could not make the connection to the Flower server at {server}: {detail}"
        ) from e
    return len(local)
