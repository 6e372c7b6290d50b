"""Adaptive batching: requests to one handler gathered into one call, from a bounded queue.

Each handler has its own thread (or `concurrency` threads) that takes batches from the queue
and runs them, one at a time each, while the event loop keeps accepting requests: under load the
queue fills while the model computes and the next batch is as big as the load makes it; when idle
a request runs at once. A thread starts its next batch as soon as one ends (results are handed
back to the event loop, which never sits between two batches). On top of that it waits a little for more
requests only when the measured arrival rate says at least one more will come within half a
batch's cost (and never longer than `max_wait_ms`). When the model runs in a process of its own
(`process.py`), the same queue feeds that process instead, and the same rules decide its batches there."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("lepton.serve")


class Overloaded(Exception):
    """The queue is full: the request is refused at once (503 with Retry-After)."""


@dataclass(eq=False)
class Item:
    """One request waiting for its handler: its batched examples (or its fields) and its future."""

    payload: Any
    options: dict[str, Any]
    size: int
    future: asyncio.Future
    key: tuple = ()


@dataclass
class _Ema:
    """An exponential moving average that starts at its first sample."""

    value: float | None = None
    alpha: float = 0.2

    def add(self, x: float) -> float:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value


class Pace:
    """When a batch is worth waiting for: the measured cost of a batch and the gap between arrivals.
    Wait for more only when at least one more request is expected within half a batch's cost (and
    never longer than `max_wait`)."""

    def __init__(self) -> None:
        self.cost, self.gap = _Ema(), _Ema()
        self._last = time.perf_counter()

    def arrived(self, n: int = 1) -> None:
        """Count `n` requests that arrived together, now."""
        now = time.perf_counter()
        self.gap.add((now - self._last) / n)
        self._last = now

    def budget(self, have: int, max_batch_size: int, max_wait: float) -> float:
        """Return the seconds worth waiting for more requests to join a batch of `have` examples."""
        if have >= max_batch_size or self.cost.value is None or not self.gap.value:
            return 0.0
        budget = min(max_wait, self.cost.value / 2)
        return budget if budget / self.gap.value >= 1.0 else 0.0


def concat(payloads: list[Any]) -> Any:
    """Return the examples of several requests (or outputs of several calls) as one: arrays of like rows
    concatenated, anything else joined as a list."""
    if len(payloads) == 1:
        return payloads[0]
    # rows of other shapes (outputs padded per call) stay rows of a list
    if all(isinstance(p, np.ndarray) for p in payloads) and len({p.shape[1:] for p in payloads}) == 1:
        return np.concatenate(payloads)
    return [x for p in payloads for x in p]


def options_key(options: dict[str, Any]) -> tuple:
    """Return what decides which requests may share a call: their options and their types, compared as
    a tuple (cheap for the usual few scalars; 1, 1.0 and True stay apart), or as JSON when a value is
    unhashable (a list, an array: `==` on those does not answer one bool)."""
    key = tuple((k, type(v), v) for k, v in sorted(options.items()))
    try:
        hash(key)
    except TypeError:
        return (json.dumps(options, sort_keys=True, default=str),)
    return key


def as_rows(outputs: Any) -> Any:
    """Return a handler's outputs as a sequence to split among requests: numeric arrays and tensors as a
    NumPy copy (serialised from its buffer later, with no Python float per number; a copy, because a
    handler may reuse its output buffer for the next batch), anything else as a list."""
    # a torch tensor
    if hasattr(outputs, "detach"):
        outputs = outputs.detach().cpu()
        try:
            outputs = outputs.numpy()
        except (TypeError, RuntimeError):
            # bfloat16, conjugate or negative views: NumPy cannot share them
            return outputs.tolist()
    # not masked arrays, dates, objects
    if type(outputs) is np.ndarray and outputs.dtype.kind in "biuf":
        return np.array(outputs)
    return outputs.tolist() if hasattr(outputs, "tolist") else list(outputs)


def call_sizes(size: int, max_batch_size: int) -> list[int]:
    """Return the examples of each handler call that `size` examples of one batch run as, in order."""
    # one request alone may hold more examples than the model was sized for
    if size <= max_batch_size:
        return [size]
    return [min(max_batch_size, size - start) for start in range(0, size, max_batch_size)]


def call(
    fn: Callable[..., Any], payload: Any, size: int, options: dict[str, Any], max_batch_size: int
) -> Any:
    """Return a batched handler's outputs for `payload`'s `size` examples as rows, from calls of at most
    `max_batch_size` examples each joined in order; raise if a call fails or miscounts its outputs."""
    rows, start = [], 0
    for n in call_sizes(size, max_batch_size):
        part = payload if n == size else payload[start : start + n]
        outputs = as_rows(fn(part, **options))
        if len(outputs) != n:
            raise RuntimeError(f"the handler returned {len(outputs)} outputs for {n} inputs")
        rows.append(outputs)
        start += n
    return concat(rows)


def run_batch(
    fn: Callable[..., Any],
    batched: bool,
    payloads: list[Any],
    sizes: list[int],
    options: dict[str, Any],
    max_batch_size: int,
) -> list[tuple[bool, Any]]:
    """Run requests that share `options` through `fn`: a batched handler in calls of at most `max_batch_size`
    examples, its outputs split back by `sizes`; if that fails, each request alone, so one bad request
    fails only itself. Return `(True, outputs)` or `(False, exception)` for each request; never raise."""
    if not batched:
        return [_one(fn, False, p, 1, options, 1) for p in payloads]
    try:
        outputs = call(fn, concat(payloads), sum(sizes), options, max_batch_size)
    except BaseException as e:
        if len(payloads) == 1:
            # alone, it would only fail again
            return [(False, e)]
        # the bad request is found by running each alone
        return [_one(fn, True, p, n, options, max_batch_size) for p, n in zip(payloads, sizes)]
    results, start = [], 0
    for n in sizes:
        results.append((True, outputs[start : start + n]))
        start += n
    return results


def _one(
    fn: Callable[..., Any],
    batched: bool,
    payload: Any,
    size: int,
    options: dict[str, Any],
    max_batch_size: int,
) -> tuple[bool, Any]:
    """Return one request's `(True, outputs)` or `(False, exception)`; never raise."""
    try:
        if not batched:
            return True, fn(**payload)
        return True, call(fn, payload, size, options, max_batch_size)
    except BaseException as e:
        # reported to that request alone
        return False, e


class HandlerQueue(ABC):
    """A handler's bounded queue of requests, and the hand-back of their results to the event loop.
    `batched=False` runs each request alone with its fields; `batched=True` joins up to `max_batch_size`
    examples' worth of requests that share the same options. Subclasses run the batches: `Batcher` on
    threads of this process, `process.ProcessBatcher` in the model's own process."""

    def __init__(
        self,
        *,
        batched: bool,
        max_batch_size: int = 1,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        concurrency: int = 1,
        on_batch: Callable[[list[int], int], None] | None = None,
    ) -> None:
        self.batched = batched
        self.max_batch_size, self.max_wait = max(1, max_batch_size), max_wait_ms / 1000
        self.max_queue, self.concurrency = max_queue, max(1, concurrency)
        # the examples of each call a batch ran as, and the queue's depth after it
        self.on_batch = on_batch or (lambda calls, depth: None)
        self.queue: deque[Item] = deque()
        self._lock = threading.Lock()
        self.pace = Pace()

    @property
    def full(self) -> bool:
        """Return whether the queue is full (after dropping requests that timed out or were abandoned)."""
        if len(self.queue) < self.max_queue:
            return False
        with self._lock:
            live = [item for item in self.queue if not item.future.done()]
            self.queue.clear()
            self.queue.extend(live)
        return len(self.queue) >= self.max_queue

    def submit(self, payload: Any, options: dict[str, Any]) -> asyncio.Future:
        """Queue a request; return the future of its outputs. Raise Overloaded when the queue is full."""
        if self.full:
            raise Overloaded(f"queue full ({self.max_queue} requests waiting)")
        self.pace.arrived()
        size = len(payload) if self.batched else 1
        item = Item(payload, options, size, asyncio.get_running_loop().create_future(), options_key(options))
        self.queue.append(item)
        self._arrived()
        return item.future

    @property
    def depth(self) -> int:
        """Return how many requests are waiting."""
        return len(self.queue)

    def retry_after(self) -> int:
        """Return the seconds a refused client should wait: roughly the time to drain the queue."""
        per_batch = (self.pace.cost.value or 0.05) / self.concurrency
        return max(1, round(per_batch * (len(self.queue) / max(1, self.max_batch_size) + 1)))

    @abstractmethod
    def start(self) -> None:
        """Start running batches; results come back to the running event loop."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop once the queue has drained."""

    # A hook, not abstract: a queue that does not count arrivals leaves it as it is.
    def _arrived(self) -> None:  # noqa: B027
        """A request was just queued (on the event loop)."""

    def _deliver(self, batch: list[Item], results: list[tuple[bool, Any]]) -> None:
        """Resolve the futures of a finished batch (on the event loop)."""
        self.on_batch(call_sizes(sum(i.size for i in batch), self.max_batch_size), self.depth)
        for item, (ok, value) in zip(batch, results):
            # timed out or abandoned meanwhile
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                # only an Exception may travel: StopIteration, SystemExit… would break the awaiting task
                bad = not isinstance(value, Exception) or isinstance(value, StopIteration)
                item.future.set_exception(
                    RuntimeError(f"the handler raised {type(value).__name__}") if bad else value
                )


class Batcher(HandlerQueue):
    """Runs one handler's batches on `concurrency` threads of this process."""

    def __init__(self, fn: Callable[..., Any], **options: Any) -> None:
        super().__init__(**options)
        self.fn = fn
        # idle threads wait here: one is woken per arrival
        self._arrivals = threading.Condition(self._lock)
        # threads gathering more for their batch wait here
        self._more = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        # threads (about to be) waiting for requests
        self._idle = 0
        # threads waiting for more requests to join their batch
        self._gathering = 0

    def _arrived(self) -> None:
        # counted before a thread looks at the queue: no wake-up is lost
        if self._idle or self._gathering:
            # one idle thread to run it at once, and any thread gathering a batch
            with self._lock:
                if self._idle:
                    self._arrivals.notify()
                if self._gathering:
                    self._more.notify_all()

    # -- the model side ------------------------------------------------------------------

    def start(self) -> None:
        """Start the handler's threads; results come back to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._work, name=f"lepton-batch-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        """Stop once the queue has drained."""
        with self._lock:
            self._stopping = True
            self._arrivals.notify_all()
            self._more.notify_all()
        for t in self._threads:
            await asyncio.to_thread(t.join)

    def _take(self, batch: list[Item]) -> list[Item]:
        """Add live queued requests that share the batch's options, up to max_batch_size examples."""
        size, skipped = sum(i.size for i in batch), []
        while self.queue and size < self.max_batch_size:
            item = self.queue.popleft()
            # timed out or client gone: drop it
            if item.future.done():
                continue
            if batch and (item.key != batch[0].key or size + item.size > self.max_batch_size):
                skipped.append(item)
                if item.key == batch[0].key:
                    # the next request of these options does not fit: keep the order
                    break
                continue
            batch.append(item)
            size += item.size
        self.queue.extendleft(reversed(skipped))
        return batch

    def _work(self) -> None:
        """A handler thread: take a batch, maybe wait for more, run it, hand results back."""
        while True:
            with self._lock:
                self._idle += 1
                while not self.queue and not self._stopping:
                    self._arrivals.wait(1.0)
                self._idle -= 1
                if not self.queue:
                    # stopping, and nothing left
                    return
                batch = self._take([])
            if not batch:
                continue
            # Waiting for more is worth it only when no other thread is free to run the next request at once.
            wait = (
                0.0
                if self._idle or not self.batched
                else self.pace.budget(sum(i.size for i in batch), self.max_batch_size, self.max_wait)
            )
            if wait:
                deadline = time.perf_counter() + wait
                # woken by each arrival; stops as soon as the batch is full
                with self._lock:
                    self._gathering += 1
                    while sum(i.size for i in self._take(batch)) < self.max_batch_size:
                        left = deadline - time.perf_counter()
                        if left <= 0:
                            break
                        self._more.wait(left)
                    self._gathering -= 1
            payloads, sizes, options = [i.payload for i in batch], [i.size for i in batch], batch[0].options
            start = time.perf_counter()
            try:
                results = run_batch(self.fn, self.batched, payloads, sizes, options, self.max_batch_size)
            except BaseException as e:
                # a bug here must fail the requests, not hang them
                log.exception("batch failed")
                results = [(False, e)] * len(batch)
            self.pace.cost.add(time.perf_counter() - start)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._deliver, batch, results)
