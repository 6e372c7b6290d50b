"""Experiment (not part of the package): the model in a process of its own, measured against
`lepton serve` as it is, for the digits half-load figure of issue 5 (see benchmarks/RESULTS.md).

In `lepton serve` the event loop and the batch thread share one GIL, and eager PyTorch releases
and retakes it at every op. Here the server process keeps HTTP, validation and the queue, with no
batch thread: each request goes down a pipe as it arrives to a process that owns the model and
batches whatever is waiting there; the event loop reads the answers (`add_reader`). A prototype:
no cancel of queued requests, no per-request errors, no bound on the pipe — what a real version
needs is listed in RESULTS.md.

    python benchmarks/experiments/model_process.py [--rate 1909] [--pairs 3] [--duration 10]

Trains digits `cnn-small` in a registry of its own, then alternates the two servers: an open loop at
`--rate` and a closed loop at 32 clients each; prints the table, writes model_process.json here."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lepton_ai.serve import app
from lepton_ai.serve.model import model_photon
from lepton_ai.serve.photon import Photon

HERE = Path(__file__).parent


def _model_process(conn: Any, ref: str, max_batch: int) -> None:
    """The model's process: take every request waiting (up to a batch), run them, answer them at once."""
    import torch

    photon = model_photon(ref)
    photon.init()
    torch.set_num_threads(1)
    conn.send("ready")
    while True:
        waiting = [conn.recv()]
        while sum(len(x) for _, x, _ in waiting) < max_batch and conn.poll(0):
            waiting.append(conn.recv())
        answers = []
        for probs in {p for _, _, p in waiting}:
            same = [w for w in waiting if w[2] == probs]
            outputs, start = photon._outputs(np.concatenate([x for _, x, _ in same]), probs).numpy(), 0
            for i, x, _ in same:
                answers.append((i, outputs[start:start + len(x)]))
                start += len(x)
        conn.send(answers)


class PipeBatcher:
    """Stands in for `Batcher`: requests go to the model's process as they arrive."""

    def __init__(self, fn: Any, *, batched: bool, max_batch_size: int = 1, max_queue: int = 1024, **_: Any) -> None:
        self.max_batch_size, self.max_queue, self.on_batch = max_batch_size, max_queue, lambda size, depth: None
        self.pending: dict[int, asyncio.Future] = {}
        self.ids = itertools.count()

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.max_queue

    @property
    def depth(self) -> int:
        return len(self.pending)

    def retry_after(self) -> int:
        return 1

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_model_process, args=(theirs, os.environ["EXPERIMENT_REF"], self.max_batch_size),
                                daemon=True)
        self.proc.start()
        assert self.conn.recv() == "ready"
        asyncio.get_running_loop().add_reader(self.conn.fileno(), self._answers)

    def submit(self, payload: Any, options: dict[str, Any]) -> asyncio.Future:
        i = next(self.ids)
        self.pending[i] = future = asyncio.get_running_loop().create_future()
        self.conn.send((i, payload, options.get("return_probs", False)))
        return future

    def _answers(self) -> None:
        answers = self.conn.recv()
        self.on_batch(sum(len(y) for _, y in answers), len(self.pending))
        for i, y in answers:
            future = self.pending.pop(i)
            if not future.done():
                future.set_result(y)

    async def stop(self) -> None:
        self.proc.kill()


class ProcessModel(Photon):
    """`lepton serve model_process:ProcessModel` with EXPERIMENT_REF set: the model's own Photon,
    whose `predict` calls go to the model's process."""

    def __new__(cls) -> Any:
        app.Batcher = PipeBatcher  # type: ignore[misc]  # this server process only
        photon = model_photon(os.environ["EXPERIMENT_REF"])
        photon.init = lambda: None  # the model is loaded in its own process, not here
        return photon


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1909.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    os.environ["LEPTON_HOME"] = tempfile.mkdtemp(prefix="lepton-experiment-")
    sys.path.insert(0, str(HERE.parent))
    from common import write_json

    from lepton_ai.data import load
    from lepton_ai.machine import describe
    from lepton_ai.serve.loadtest import load_test
    from lepton_ai.serve.server import ServerProcess
    from lepton_ai.train.job import train_and_register

    ref = train_and_register("cnn-small", "digits", "digits-cnn", epochs=10, lr=3e-3, batch_size=64,
                             progress=False).ref
    payload = {"inputs": [load("digits", "test").features[0, 0].tolist()]}
    env = {"EXPERIMENT_REF": ref, "PYTHONPATH": str(HERE)}
    servers = {"lepton serve": [ref], "model process": ["model_process:ProcessModel"]}
    rows = []
    print(describe())
    for pair in range(args.pairs):
        for name, target in servers.items():
            with ServerProcess(target, env=env) as server:
                half = load_test(server.url, payload, concurrency=256, duration=args.duration, warmup=2, rate=args.rate)
                full = load_test(server.url, payload, concurrency=32, duration=args.duration, warmup=2)
            rows.append({"pair": pair + 1, "server": name, "open_loop": half, "closed_loop_32": full})
            print(f"pair {pair + 1} {name:<14} open loop {args.rate:,.0f}/s: p50 {half['latency_ms']['p50']} ms, "
                  f"p99 {half['latency_ms']['p99']} ms   closed loop 32: {full['requests_per_s']:,.0f} requests/s, "
                  f"p99 {full['latency_ms']['p99']} ms")
    write_json(HERE / "model_process.json", {"machine_line": describe(), "rate": args.rate, "ref": ref, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
