"""The Flower apps of a federation under secure aggregation (`lepton fl server --secure-aggregation`): the
strategy the server's workflow hands each round's result to, and the ClientApp each client runs
(`lepton_ai.privacy.relay` carries Flower's messages between them).

Clients send their update Δ = w_client − w_global (not their weights: Δ stays within SecAgg+'s clipping
range), clipped to C under client-level DP, weighted by their example count cut to the plan's maximum.
Under SecAgg+ (`SecAggPlusWorkflow` with `secaggplus_mod`, Flower's protocol) the server only ever holds
masked vectors, and its strategy receives their weighted mean alone; the strategy then takes its step (and
adds DP's noise) from that mean, and hands each round's global state on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import torch
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, Message, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server import strategy as flower_strategy

from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy.aggregation import ClientDP, Strategy, aggregate, flatten, unflatten, weighted_mean


@dataclass
class Plan:
    """What the server's workflow is to run (`secure.plan_of`)."""

    rounds: int
    min_clients: int
    # the fields of `aggregation.Strategy` (without its optimiser state)
    strategy: dict[str, Any]
    # the training options each round sends (`flower_server.fit_config`), one per round
    configs: list[dict[str, Any]]
    weights: list[str]
    max_examples: int
    secure: bool = True
    shares: int = 3
    threshold: int = 2
    timeout: float | None = None
    fraction: float | None = None
    dp: dict[str, Any] | None = None

    @property
    def client_dp(self) -> ClientDP | None:
        """Return the calibrated client-level DP, if any."""
        return ClientDP.of(self.dp) if self.dp else None


def client_update(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], weights: list[str], clip: float
) -> dict[str, torch.Tensor]:
    """Return a client's update Δ = after − before as float32 (0 for integer entries); with `clip` > 0 (DP),
    its trainable weights scaled to norm ≤ `clip` and the rest 0, as the server does not take them."""
    delta = {
        k: (after[k] - v).float() if v.is_floating_point() else torch.zeros(v.shape)
        for k, v in before.items()
    }
    if clip <= 0:
        return delta
    flat = flatten(delta, weights)
    scale = min(1.0, clip / max(float(flat.norm()), 1e-12))
    clipped = unflatten(flat * scale, delta, weights)
    return {k: v if k in weights else torch.zeros_like(v) for k, v in clipped.items()}


def pack(state: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """Return a state as Flower carries it here: one float32 vector of every entry in order (Flower pushes
    and pulls each array of a message as its own object over HTTP: one array, not one per tensor)."""
    return [flatten(state, list(state)).float().numpy()]


def unpack(arrays: list[np.ndarray], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the state `pack` made, with the keys, shapes and dtypes of `like`; raise if it does not fit."""
    return unflatten(_vector(arrays, sum(v.numel() for v in like.values())), like, list(like))


def _vector(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """Return `pack`'s one vector of `size` real numbers as float64; raise if `arrays` are not that."""
    if len(arrays) != 1 or arrays[0].shape != (size,) or arrays[0].dtype.kind not in "fiu":
        raise InvalidInputError(f"not one vector of the model's {size} numbers")
    return torch.from_numpy(np.array(arrays[0])).double()


# -- the server ---------------------------------------------------------------------------------


class RoundDone(NamedTuple):
    """A round's outcome as the strategy hands it on: the new global state (None when the round failed)
    and the round's figures."""

    round: int
    state: dict[str, torch.Tensor] | None
    figures: dict[str, Any]


def _updates(
    arrays: list[list[np.ndarray]], examples: list[int], size: int, max_examples: int
) -> list[tuple[torch.Tensor, int]]:
    """Return the results that are one finite vector of the model's `size`, each with its example count cut
    to `max_examples`; anything else is that client's failure of the round."""
    fitting = []
    for arr, n in zip(arrays, examples):
        try:
            delta = _vector(arr, size)
        except InvalidInputError:
            continue
        if isinstance(n, int) and n >= 1 and bool(torch.isfinite(delta).all()):
            fitting.append((delta, min(n, max_examples)))
    return fitting


# what Flower's workflow reads from each SecAgg+ stage's reply (secaggplus_workflow.py): key → type
_STAGE_REPLIES: dict[str, dict[str, type]] = {
    Stage.SETUP: {Key.PUBLIC_KEY_1: bytes, Key.PUBLIC_KEY_2: bytes},
    Stage.SHARE_KEYS: {Key.DESTINATION_LIST: list, Key.CIPHERTEXT_LIST: list},
    Stage.COLLECT_MASKED_VECTORS: {Key.MASKED_PARAMETERS: list},
    Stage.UNMASK: {Key.NODE_ID_LIST: list, Key.SHARE_LIST: list},
}


def check_reply(sent: Message, reply: Message) -> None:
    """Raise ValueError on a client's reply that Flower's workflow would fail on (a missing key, a value of
    another type, lists of different lengths, shares of nodes it was not told of, a training result without
    its fields): that client fails alone, where the workflow would stop the federation."""
    if reply.metadata.message_type != sent.metadata.message_type:
        raise ValueError("a reply of another type than its message")
    asked = sent.content.config_records.get(RECORD_KEY_CONFIGS)
    if asked is None:
        _training_result(reply, keep_input=False)
        return
    stage = str(asked[Key.STAGE])
    answer = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if answer is None or any(not isinstance(answer.get(k), t) for k, t in _STAGE_REPLIES[stage].items()):
        raise ValueError(f"a SecAgg+ {stage} reply without what the stage needs")
    lists = {k: cast(list, answer[k]) for k, t in _STAGE_REPLIES[stage].items() if t is list}
    if stage == Stage.SHARE_KEYS and len(lists[Key.DESTINATION_LIST]) != len(lists[Key.CIPHERTEXT_LIST]):
        raise ValueError("SecAgg+ key shares and their destinations differ in number")
    if stage == Stage.COLLECT_MASKED_VECTORS:
        _training_result(reply, keep_input=True)
    if stage == Stage.UNMASK:
        owners = lists[Key.NODE_ID_LIST]
        told = {*cast(list, asked[Key.ACTIVE_NODE_ID_LIST]), *cast(list, asked[Key.DEAD_NODE_ID_LIST])}
        if len(owners) != len(lists[Key.SHARE_LIST]) or not set(owners) <= told:
            raise ValueError("SecAgg+ shares of nodes this client was not asked about")


def _training_result(reply: Message, keep_input: bool) -> None:
    """Raise ValueError unless Flower can read `reply` as a training result, as its workflow will."""
    try:
        compat.recorddict_to_fitres(reply.content, keep_input)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a training result Flower cannot read: {e!r}") from None


_Base: Any = flower_strategy.Strategy


class SecureStrategy(_Base):
    """Our aggregation over what the fit workflow hands over: under SecAgg+ every result carries the same
    weighted mean of the clients' updates (the strategy never sees one client's), without it each client's
    own update; either way the round's update is their weighted mean, and the global state follows."""

    def __init__(
        self, plan: Plan, state: dict[str, torch.Tensor], on_round: Callable[[RoundDone], None]
    ) -> None:
        self.plan, self.state, self.on_round = plan, state, on_round
        self.size = sum(v.numel() for v in state.values())
        self.strategy = Strategy(**{**plan.strategy, "betas": tuple(plan.strategy["betas"])})
        self.dp = plan.client_dp
        self.noise = torch.Generator().manual_seed(int(plan.configs[0]["seed"]) + 1)
        self.started, self.asked, self.done = time.perf_counter(), 0, 0

    def initialize_parameters(self, client_manager: Any) -> Any:
        return ndarrays_to_parameters(pack(self.state))

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[Any, Any]]:
        from flwr.common import FitIns

        from lepton_ai.privacy.flower import sample_clients

        self.close_round(server_round - 1)
        self.started = time.perf_counter()
        chosen = sample_clients(
            client_manager, server_round, self.plan.min_clients, self.plan.timeout, self.plan.fraction
        )
        self.asked = len(chosen)
        return [(c, FitIns(parameters, self.plan.configs[server_round - 1])) for c in chosen]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[Any, Any]], failures: list[Any]
    ) -> tuple[Any, dict[str, Any]]:
        like = {k: torch.zeros(v.shape) for k, v in self.state.items()}
        arrays = [parameters_to_ndarrays(r.parameters) for _, r in results]
        deltas = _updates(arrays, [r.num_examples for _, r in results], self.size, self.plan.max_examples)
        self.done = server_round
        figures = {
            "clients": len(deltas),
            "failures": self.asked - len(deltas),
            "examples": sum(n for _, n in deltas),
            # what the strategy was handed: one vector under SecAgg+, one per client without it
            "updates_seen": len({b"".join(a.tobytes() for a in arr) for arr in arrays}),
            "seconds": time.perf_counter() - self.started,
        }
        if not deltas:
            self.on_round(RoundDone(server_round, None, figures))
            return None, {}
        mean = unflatten(weighted_mean(deltas), like, list(like))
        self.state = self._step(mean, len(deltas))
        self.on_round(RoundDone(server_round, self.state, figures))
        return ndarrays_to_parameters(pack(self.state)), {}

    def _step(self, mean: dict[str, torch.Tensor], clients: int) -> dict[str, torch.Tensor]:
        """Return the next global state from the clients' mean update: the strategy's step, or under DP the
        noised sum of the (client-clipped) updates over the fixed number of clients."""
        if self.dp is None:
            averaged = {k: (v + mean[k].to(v.dtype)) for k, v in self.state.items()}
            return aggregate(self.strategy, self.state, [(averaged, 1)], weights=self.plan.weights)
        keys = [k for k in self.state if k in self.plan.weights]
        total = flatten(mean, keys) * clients
        update = self.dp.noised(total, float(self.plan.min_clients), self.noise)
        return unflatten(self.strategy.apply(flatten(self.state, keys), update), self.state, keys)

    def close_round(self, server_round: int) -> None:
        """Record a round whose secure aggregation halted (too few clients left to unmask) as failed."""
        if server_round >= 1 and self.done < server_round:
            figures = {"clients": 0, "failures": self.asked, "halted": True}
            self.on_round(RoundDone(server_round, None, figures))
            self.done = server_round

    def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Any) -> None:
        # `lepton fl server` tests each round's state itself
        return None


# -- the clients ---------------------------------------------------------------------------------


class DeltaClient(NumPyClient):
    """Trains the server's model on this node's data each round and returns its update (see the module)."""

    def __init__(self, node: dict[str, Any]) -> None:
        from lepton_ai.device import resolve_device
        from lepton_ai.privacy.flower import ModelCache, client_data, client_seed_of

        self.data = client_data(str(node["data"]), str(node["partition"]), int(node["seed"]))
        self.device, self.seed = resolve_device(str(node["device"])), client_seed_of(str(node["data"]))
        self.model = ModelCache(self.data)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        from lepton_ai.privacy.aggregation import weight_keys
        from lepton_ai.privacy.federated import cpu_threads
        from lepton_ai.privacy.flower import train_round

        net = self.model(str(config["model"]))
        clip = float(config["dp_clip"])
        with cpu_threads(net, self.device):
            before = unpack(parameters, net.state_dict())
            after, n, metrics = train_round(
                net, self.data, before, config, device=self.device, client_seed=self.seed
            )
            delta = pack(client_update(before, after, weight_keys(net), clip))
        # under DP every client weighs the same; else its count, cut to the server's maximum
        examples = 1 if clip > 0 else min(n, int(config["max_examples"]))
        return delta, examples, metrics


# a client process serves one node: its data loaded and its model built once, not for each message
_clients: dict[tuple[tuple[str, Any], ...], DeltaClient] = {}


def client_for(node: dict[str, Any]) -> DeltaClient:
    """Return this process's client for the node config `node` (data, partition, seed, device)."""
    key = tuple(sorted(node.items()))
    if key not in _clients:
        _clients[key] = DeltaClient(node)
    return _clients[key]


def _client(context: Context) -> Any:
    return client_for(dict(context.node_config)).to_client()


def _secure_when_asked(msg: Message, context: Context, call_next: Any) -> Message:
    """Run Flower's SecAgg+ client mod on the rounds that use it (it fails on a plain training message)."""
    secure = "secaggplus_configs" in msg.content.config_records
    reply: Message = secaggplus_mod(msg, context, call_next) if secure else call_next(msg, context)
    return reply


client_app = ClientApp(client_fn=_client, mods=[_secure_when_asked])
