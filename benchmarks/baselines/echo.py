"""Servers with no model, to measure what a request costs the HTTP side alone: a bare Starlette
route, and a Lepton Photon with a batched handler. Both answer POST /predict.

    PYTHONPATH=benchmarks/baselines python -m uvicorn echo:starlette_app --port 8003
    lepton serve benchmarks/baselines/echo.py:Echo --port 8004
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lepton_ai.serve import Photon, handler


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

