"""Baseline: a plain FastAPI endpoint calling the model once per request, as one would write it
by hand. Serves POST /predict {"inputs": [example, ...]} -> {"outputs": [class id, ...]}.

    python benchmarks/baselines/fastapi_server.py REF --port 8001
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from lepton_ai.compress import load_runnable


class PredictRequest(BaseModel):
    inputs: list[list[list[float]]]


class PredictResponse(BaseModel):
    outputs: list[int]


def make_app(ref: str) -> FastAPI:
    model = load_runnable(ref)
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(request: PredictRequest) -> PredictResponse:
        x = torch.from_numpy(np.asarray(request.inputs, dtype=np.float32)).unsqueeze(1)
        with torch.inference_mode():
            return PredictResponse(outputs=model(x).argmax(-1).tolist())

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("ref")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(make_app(args.ref), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
