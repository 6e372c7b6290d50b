"""The model in a process of its own: a Photon's `init` and handlers run in a child process, while the
server's event loop keeps HTTP, validation (`prepare`), the queue and the answers.

In one process the event loop and eager PyTorch share one GIL, which PyTorch releases and retakes at
every op: each waits for the other, and a request costs more CPU the fewer requests a batch holds.
Here each request is sent to the model process as it arrives (up to two batches' worth in flight;
the rest waits in the server's bounded queue, so overload still answers 503 at once), and the model
process runs whatever is waiting there as one batch, the next as soon as one ends. A request that
times out or whose client leaves is cancelled there too, if its batch has not started.

The wire is a socketpair the server makes for its own child: length-prefixed pickles (NumPy arrays and
the handlers' own types travel as they are; only the two processes hold the socket, and each
unpickles only what the other pickled: validated requests one way, handler outputs the other).
Server to model: `("run", id, handler, payload, options)`, `("cancel", id)`, several to a frame.
Model to server: `("ready",)`, `("failed", message)`, `("done", handler, seconds, [(id, ok, value)])`.

The server starts the model process as `python -c "...main(FD)"` with its end of the socket.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.serve.batching import HandlerQueue, Item, Pace, options_key, run_batch
from lepton_ai.serve.target import load_photon, serving_gc

log = logging.getLogger("lepton.serve")
_LENGTH = struct.Struct("<Q")


class Answer(NamedTuple):
    """One request's answer from the model process: its id, whether it succeeded, its output or failure
    (a failure is `(kind, message)`, as `_failure` makes it)."""

    id: int
    ok: bool
    value: Any


class InFlight(NamedTuple):
    """A request sent to the model process: the queue it came from and the request itself."""

    queue: ProcessBatcher
    item: Item


class Waiting(NamedTuple):
    """A request in the model process, waiting for its batch: handler, payload, options, examples, and the
    key of the options it may share a call under."""

    handler: str
    payload: Any
    options: dict[str, Any]
    size: int
    key: tuple


@dataclass
class ProcessSpec:
    """What the model process needs to build its own copy of the Photon (as `load_photon` does)."""

    target: str
    device: str = "cpu"
    threads: int | None = None


def frame(message: Any) -> bytes:
    """Return `message` as one frame: its pickle's length, then the pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


class Frames:
    """Cuts a byte stream back into the messages it carries."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> list[Any]:
        """Add bytes received; return the messages now complete."""
        self.buffer += data
        messages, at = [], 0
        while len(self.buffer) - at >= _LENGTH.size:
            (n,) = _LENGTH.unpack_from(self.buffer, at)
            if len(self.buffer) - at - _LENGTH.size < n:
                break
            messages.append(pickle.loads(memoryview(self.buffer)[at + _LENGTH.size : at + _LENGTH.size + n]))
            at += _LENGTH.size + n
        del self.buffer[:at]
        return messages


class ModelProcessFailed(LeptonError):
    """The model process failed before it was ready (its `init` raised, or it died)."""


class HandlerFailed(Exception):
    """A handler raised in the model process: `kind` names the exception's type (answered as a 500)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _failure(e: BaseException) -> tuple[str, str]:
    """Return an exception as what travels back: input errors keep their message (a 422), others their
    type."""
    if isinstance(e, (ValueError, OverflowError, LeptonError)):
        return "invalid", str(e)
    return type(e).__name__, str(e)


def _exception(kind: str, message: str) -> Exception:
    return InvalidInputError(message) if kind == "invalid" else HandlerFailed(kind, message)


# -- the server's side --------------------------------------------------------------------------------


class ModelProcess(asyncio.Protocol):
    """The model process of one server process, and the socket to it. Restarted if it dies after it
    was ready (its requests in flight fail with a 500; the service is not ready until the new one is)."""

    def __init__(self, spec: ProcessSpec, handlers: dict[str, dict[str, Any]]) -> None:
        # handler name: {"batched", "max_batch_size", "max_wait"}
        self.spec, self.handlers = spec, handlers
        self.queues: dict[str, ProcessBatcher] = {}
        # in flight, by id
        self.sent: dict[int, InFlight] = {}
        self.ids = itertools.count()
        self.proc: subprocess.Popen | None = None
        self.transport: asyncio.Transport | None = None
        # called when a ready model process dies
        self.on_exit: Callable[[str], None] = lambda why: None
        self._frames = Frames()
        self._outbox: list[Any] = []
        self._ready: asyncio.Future | None = None
        # spawned, not yet connected to the event loop
        self._socket: socket.socket | None = None
        self._stopping = False

    def spawn(self) -> None:
        """Start the model process now, so that its imports and `init` overlap the server's own start-up."""
        self._socket, theirs = socket.socketpair()
        with theirs:
            code = f"import os; from {__name__} import main; main({theirs.fileno()}); os._exit(0)"
            self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()])
        self._socket.sendall(frame([("config", {"spec": self.spec, "handlers": self.handlers})]))

    async def start(self) -> None:
        """Start the model process (unless `spawn` did) and wait until its `init` has finished; raise
        ModelProcessFailed if it failed."""
        if self._socket is None:
            self.spawn()
        sock, self._socket = self._socket, None
        loop = asyncio.get_running_loop()
        self._frames, self._ready = Frames(), loop.create_future()
        await loop.create_unix_connection(lambda: self, sock=sock)
        await self._ready
        # what waited for the model process
        for queue in self.queues.values():
            queue.start()

    def send(self, message: Any) -> None:
        """Send a message with the others of this event-loop turn: one frame, one write."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(messages))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a unix socket connection: a full (write) transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            kind, *rest = message
            if kind == "done":
                name, seconds, answers = rest
                finished = [(self.sent.pop(i).item, ok, value) for i, ok, value in answers]
                self.queues[name].done(seconds, finished)
            elif kind == "ready":
                assert self._ready is not None
                self._ready.set_result(None)
            elif kind == "failed":
                assert self._ready is not None
                (reason,) = rest
                self._ready.set_exception(ModelProcessFailed(reason))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._stopping:
            return
        # its socket closes as it exits
        try:
            code: Any = self.proc.wait(1) if self.proc is not None else None
        except subprocess.TimeoutExpired:
            code = "unknown"
        why = f"the model process exited (code {code})"
        failed = HandlerFailed("ModelProcessExited", why)
        for _, item in self.sent.values():
            if not item.future.done():
                item.future.set_exception(failed)
        self.sent.clear()
        for queue in self.queues.values():
            queue.in_flight = queue.requests_in_flight = 0
        assert self._ready is not None
        if not self._ready.done():
            self._ready.set_exception(ModelProcessFailed(f"{why} before it was ready (see the server's log)"))
        elif not self._ready.cancelled() and self._ready.exception() is None:
            # it was ready: replace it
            log.error("%s: starting another", why)
            self.on_exit(why)

    def _cancelled(self, i: int, future: asyncio.Future) -> None:
        """A request in flight timed out or lost its client: drop it there, if its batch has not started."""
        if future.cancelled() and i in self.sent:
            self.send(("cancel", i))

    async def stop(self) -> None:
        """Close the socket (the model process then exits) and wait for it, killing it after 10 s."""
        self._stopping = True
        if self.transport is not None:
            self.transport.close()
        if self.proc is not None:
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


class ProcessBatcher(HandlerQueue):
    """A handler's queue whose batches run in the model process. Requests go there as they arrive, up to
    two batches' worth of examples in flight (one running, the next gathering); the rest wait here."""

    def __init__(self, process: ModelProcess, name: str, **options: Any) -> None:
        super().__init__(**options)
        self.process, self.name = process, name
        self.window = 2 * self.max_batch_size
        # examples and requests sent and not yet answered
        self.in_flight = self.requests_in_flight = 0
        process.queues[name] = self

    @property
    def depth(self) -> int:
        """Return how many requests are waiting, here or in the model process."""
        return len(self.queue) + self.requests_in_flight

    def start(self) -> None:
        """Send what was queued before the model process was ready."""
        self._arrived()

    async def stop(self) -> None:
        """Nothing to stop here: the model process is stopped by its owner once every queue is done."""

    def _arrived(self) -> None:
        """Send queued requests while fewer than `window` examples are in flight."""
        process = self.process
        while self.queue and process.transport is not None and self.in_flight < self.window:
            item = self.queue.popleft()
            # timed out or client gone while queued
            if item.future.done():
                continue
            i = next(process.ids)
            process.sent[i] = InFlight(self, item)
            self.in_flight += item.size
            self.requests_in_flight += 1
            process.send(("run", i, self.name, item.payload, item.options))
            item.future.add_done_callback(functools.partial(process._cancelled, i))

    def done(self, seconds: float, finished: list[tuple[Item, bool, Any]]) -> None:
        """A batch ran (or was cancelled there): answer its requests and send more."""
        if seconds:
            self.pace.cost.add(seconds)
        self.in_flight -= sum(item.size for item, _, _ in finished)
        self.requests_in_flight -= len(finished)
        results = [(ok, value if ok else _exception(*value)) for _, ok, value in finished]
        self._deliver([item for item, _, _ in finished], results)
        self._arrived()


# -- the model's side ----------------------------------------------------------------------------------


class _Model:
    """The model process: reads requests, runs whatever is waiting as batches, answers them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.frames = sock, Frames()
        self.waiting: dict[int, Waiting] = {}
        self.fns: dict[str, Callable[..., Any]] = {}
        self.handlers: dict[str, dict[str, Any]] = {}
        self.paces: dict[str, Pace] = {}
        self.open = True

    def read(self, timeout: float | None) -> list[Any]:
        """Return the messages that arrived, waiting up to `timeout` seconds (None: until one does)."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return []
        data = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not chunk:
                # the server closed the socket: it is done with us
                self.open = False
                break
            data += chunk
        messages = self.frames.feed(data)
        return [m for batch in messages for m in batch]

    def take(self, messages: list[Any]) -> None:
        """Add requests to the waiting ones; drop the cancelled ones whose batch has not started."""
        arrived: dict[str, int] = {}
        for message in messages:
            if message[0] == "run":
                _, i, name, payload, options = message
                size = len(payload) if self.handlers[name]["batched"] else 1
                self.waiting[i] = Waiting(name, payload, options, size, options_key(options))
                arrived[name] = arrived.get(name, 0) + 1
                continue
            _, i = message
            # a cancel, in time
            if (dropped := self.waiting.pop(i, None)) is not None:
                self.send(("done", dropped.handler, 0.0, [Answer(i, False, ("cancelled", ""))]))
        for name, n in arrived.items():
            self.paces[name].arrived(n)

    def batch(self) -> tuple[str, list[int], int]:
        """Return the oldest waiting request's handler, the requests that may share its call (in order) and
        their examples."""
        oldest = next(iter(self.waiting.values()))
        name, key = oldest.handler, oldest.key
        limit, size = self.handlers[name]["max_batch_size"], 0
        ids: list[int] = []
        for i, w in self.waiting.items():
            if (w.handler, w.key) != (name, key):
                continue
            if ids and size + w.size > limit:
                # the next one does not fit: keep the order
                break
            ids.append(i)
            size += w.size
            if size >= limit:
                break
        return name, ids, size

    def serve(self) -> None:
        """Run batches until the server closes the socket."""
        while self.open:
            self.take(self.read(0 if self.waiting else None))
            if not self.waiting:
                continue
            name, ids, size = self.batch()
            h = self.handlers[name]
            wait = self.paces[name].budget(size, h["max_batch_size"], h["max_wait"]) if h["batched"] else 0.0
            deadline = time.perf_counter() + wait
            while self.open and size < h["max_batch_size"] and (left := deadline - time.perf_counter()) > 0:
                # more may join, or the batch's requests be cancelled
                self.take(self.read(left))
                if not self.waiting:
                    break
                name, ids, size = self.batch()
            # `ids` was chosen after the last read: all still waiting
            if self.waiting:
                self.run(name, ids)

    def run(self, name: str, ids: list[int]) -> None:
        """Run one batch and send its answers."""
        batch = [self.waiting.pop(i) for i in ids]
        payloads, sizes, options = [w.payload for w in batch], [w.size for w in batch], batch[0].options
        batched, max_batch_size = self.handlers[name]["batched"], self.handlers[name]["max_batch_size"]
        start = time.perf_counter()
        results = run_batch(self.fns[name], batched, payloads, sizes, options, max_batch_size)
        seconds = time.perf_counter() - start
        answers = []
        for i, (ok, value) in zip(ids, results):
            if not ok:
                exc, value = value, _failure(value)
                kind, _ = value
                # a bug, not bad input: its traceback goes to the log
                if kind != "invalid":
                    log.error("handler %s failed", name, exc_info=exc)
            answers.append(Answer(i, ok, value))
        self.send(("done", name, seconds, answers))

    def send(self, message: Any) -> None:
        """Send a message (a blocking write: the server's event loop always reads)."""
        try:
            data = frame(message)
        except Exception:
            # an output that cannot be pickled fails its own request only
            kind, name, seconds, answers = message
            data = frame((kind, name, seconds, [_sendable(answer) for answer in answers]))
        try:
            self.sock.sendall(data)
        except OSError:
            # the server is gone
            self.open = False


def _sendable(answer: Answer) -> Answer:
    """Return `answer`, or a failure in its place when its output cannot be pickled."""
    try:
        pickle.dumps(answer)
        return answer
    except Exception:
        what = type(answer.value).__name__
        message = f"the handler returned a {what}, which cannot be sent back from the model process"
        return Answer(answer.id, False, ("TypeError", message))


def main(fd: int) -> None:
    """The model process: build the Photon, run its `init`, then serve batches until the server closes the
    socket."""
    # The server drains on SIGTERM and Ctrl-C, and closes the socket when it is done: that is our signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # to the server's stderr, in its format
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     [model process %(process)d] %(message)s"))
    logging.getLogger("lepton").addHandler(handler)
    logging.getLogger("lepton").setLevel(logging.INFO)
    model = _Model(socket.socket(fileno=fd))
    messages: list[Any] = []
    while model.open and not messages:
        messages = model.read(None)
    if not messages:
        return
    (_, config), *pending = messages
    spec: ProcessSpec = config["spec"]
    try:
        photon = load_photon(spec.target, spec.device, spec.threads)
        photon.init()
        model.fns = {name: getattr(photon, name) for name in config["handlers"]}
    except Exception as e:
        log.exception("init failed")
        model.send(("failed", f"{type(e).__name__} in init (see the server's log)"))
        return
    model.handlers = config["handlers"]
    model.paces = {name: Pace() for name in model.handlers}
    serving_gc()
    gc.freeze()
    model.send(("ready",))
    model.take(pending)
    model.serve()
