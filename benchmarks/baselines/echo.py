"""Servers with no model, to measure what a request costs the HTTP side alone: a bare Starlette
route, and a Lepton Photon with a batched handler. Both answer POST /predict. And a registered model
served exactly as `lepton serve REF` serves it, but with its forward taken out: the latency floor
that this machine, the server and the load generator put under any model served that way.

    PYTHONPATH=benchmarks/baselines python -m uvicorn echo:starlette_app --port 8003
    lepton serve benchmarks/baselines/echo.py:Echo --port 8004
    LEPTON_NO_COMPUTE_REF=digits-cnn lepton serve benchmarks/baselines/echo.py:NoCompute --port 8005
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lepton_ai.serve import Photon, handler
from lepton_ai.serve.model import TensorModelPhoton


async def predict(request: Request) -> Response:
    await request.body()
    return Response(b'{"outputs":[0]}', media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


starlette_app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])


class Echo(Photon):
    @handler(max_batch_size=64)
    def predict(self, inputs: list[list[float]]) -> list[int]:
        return [0] * len(inputs)


class NoCompute(TensorModelPhoton):
    """The model `LEPTON_NO_COMPUTE_REF` served as `lepton serve` serves it (same validation, batching, model
    process), answering class 0 without running the model."""

    def __init__(self) -> None:
        super().__init__(os.environ["LEPTON_NO_COMPUTE_REF"])

    def _outputs(self, inputs: Any, return_probs: bool, return_labels: bool = False) -> Any:
        return np.zeros(len(inputs), dtype=np.int64)
