"""A Flower client that attacks the federation instead of training: `python -m tests.privacy.attacker
SERVER KIND`, KIND one of garbage (bytes NumPy cannot read), pickled (an object array), empty (one empty
array), strings (arrays of strings shaped like the model's), or count:N (the weights it was sent, claiming N
examples)."""

from __future__ import annotations

import io
import sys

import flwr
import numpy as np
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)


def forged(kind: str, ins: FitIns) -> tuple[Parameters, int]:
    """Return the update and example count this attacker sends back for the weights in `ins`."""
    sent = parameters_to_ndarrays(ins.parameters)
    if kind == "garbage":
        return Parameters(tensors=[b"\x93NUMPY but not really"], tensor_type="numpy.ndarray"), 100
    if kind == "pickled":
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return Parameters(tensors=[buffer.getvalue()], tensor_type="numpy.ndarray"), 100
    if kind == "empty":
        return ndarrays_to_parameters([np.array([], dtype=np.float32)]), 100
    if kind == "strings":
        return ndarrays_to_parameters([np.full(a.shape, "x") for a in sent]), 100
    _, _, count = kind.partition(":")
    # the weights pushed far off, to steer the average as much as the claimed count lets it
    return ndarrays_to_parameters([a + 100 if a.dtype.kind == "f" else a for a in sent]), int(count)


class Attacker(flwr.client.Client):
    """Answers every round with a forged update."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def fit(self, ins: FitIns) -> FitRes:
        parameters, examples = forged(self.kind, ins)
        return FitRes(Status(Code.OK, ""), parameters, examples, {})


if __name__ == "__main__":
    server, kind = sys.argv[1:3]
    flwr.client.start_client(server_address=server, client=Attacker(kind), insecure=True, max_wait_time=60)
