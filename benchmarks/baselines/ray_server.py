"""Baseline: the same model as a Ray Serve deployment with `@serve.batch`, on a local Ray
instance. Serves POST /predict {"inputs": [example, ...]} -> {"outputs": [class id, ...]}.

    python benchmarks/baselines/ray_server.py REF --port 8002 [--max-batch-size 64 --wait-ms 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

import numpy as np
import ray
import torch
from ray import serve
from starlette.requests import Request


@serve.deployment(max_ongoing_requests=256)
class Classifier:
    def __init__(self, ref: str, max_batch_size: int, wait_ms: float) -> None:
        from lepton_ai.compress import load_runnable

        self.model = load_runnable(ref)
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(wait_ms / 1000)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def predict_batch(self, requests: list[np.ndarray]) -> list[list[int]]:
        x = torch.from_numpy(np.concatenate(requests))
        with torch.inference_mode():
            ids = self.model(x).argmax(-1).tolist()
        out, start = [], 0
        for r in requests:
            out.append(ids[start : start + len(r)])
            start += len(r)
        return out

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        x = np.asarray(body["inputs"], dtype=np.float32)[:, None]
        return {"outputs": await self.predict_batch(x)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("ref")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    args = parser.parse_args()
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"LEPTON_HOME": os.environ.get("LEPTON_HOME", "")}},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Classifier.bind(args.ref, args.max_batch_size, args.wait_ms), route_prefix="/predict")
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
