"""The HTTP app of a Photon: one POST route per handler, health, readiness, metrics, OpenAPI.

Handler calls are answered straight from the ASGI entry (`Service._dispatch`), which parses and
validates the body in one pass with pydantic-core (no routing, middleware stack or dependency solving
on the hot path); FastAPI serves the rest, `/openapi.json` and `/docs` included, with the handlers'
schemas added from their type hints (serve/openapi.py).

Middleware: the FastAPI app is private, because a middleware added to it would silently miss the
handler calls. `Service.add_middleware` is the one way to add one: it wraps the whole service, so the
middleware sees handler calls, health, metrics and docs alike (and the hot path crosses nothing when
none is added)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.serve.batching import Batcher, HandlerQueue, Overloaded
from lepton_ai.serve.metrics import Metrics
from lepton_ai.serve.openapi import HandlerDocs
from lepton_ai.serve.photon import Handler, Photon
from lepton_ai.serve.process import (
    HandlerFailed,
    ModelProcess,
    ModelProcessFailed,
    ProcessBatcher,
    ProcessSpec,
)
from lepton_ai.version import __version__

log = logging.getLogger("lepton.serve")
# bodies up to this take less to parse than a hop to a thread, so they stay on the event loop
_INLINE_BYTES = 64 * 1024


@dataclass
class ServeSettings:
    """Limits and options of a service; `None` keeps each handler's own batching options."""

    max_batch_size: int | None = None
    max_wait_ms: float | None = None
    max_concurrency: int = 512
    max_queue: int = 256
    # a handler's own timeout_s, when it sets one, wins
    timeout_s: float = 30.0
    token: str | None = field(default=None, repr=False)
    # the token's sha256 in hex, in place of the token: what a deployment whose settings others can read
    # (Ray Serve's application config) carries
    token_sha256: str | None = field(default=None, repr=False)
    max_body_bytes: int = 8 * 1024 * 1024
    # per request: one call must not be unbounded
    max_examples: int = 4096
    # None: as the Photon asks (see `Photon.model_process`)
    model_process: bool | None = None


class HTTPError(Exception):
    """An answer other than 200: status, a short error code and a message naming the problem."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}

    def response(self) -> Response:
        """Return the error as a JSON response."""
        return json_response({"error": self.error, "message": self.message}, self.status, self.headers)


def _tolist(value: Any) -> Any:
    # arrays orjson cannot take (not contiguous, object dtype) and tensors
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# orjson writes plain data and NumPy arrays; dataclasses and datetimes are left to pydantic-core, which
# honours pydantic's aliases and serialisers and writes them as it always has.
_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Return `content` as JSON: orjson where it can (NumPy arrays straight from their buffer, float32
    as float32: faster and smaller than `tolist()` through pydantic-core, benchmarks/RESULTS.md), else
    pydantic-core (models, dataclasses, datetimes, tensors); NaN and infinities become null either way."""
    try:
        body = orjson.dumps(content, option=_ORJSON)
    except TypeError:
        body = to_json(content, inf_nan_mode="null", fallback=_tolist)
    return Response(body, status, headers, media_type="application/json")


def _queue_full(batcher: HandlerQueue) -> HTTPError:
    return HTTPError(
        503,
        "overloaded",
        f"queue full ({batcher.max_queue} requests waiting); retry later",
        {"Retry-After": str(batcher.retry_after())},
    )


def _first_error(e: ValidationError) -> HTTPError:
    err = e.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return HTTPError(400, "malformed_json", f"the body is not valid JSON: {err['msg']}")
    where = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return HTTPError(422, "invalid_input", f"{where}: {err['msg']}{more}")


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (after the body was read, the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Service:
    """A Photon, its batchers and its state (starting, ready or failed): an ASGI app. `on_ready` runs on
    the event loop once `init` has finished, before the service reports ready."""

    def __init__(
        self,
        photon: Photon,
        settings: ServeSettings | None = None,
        on_ready: Callable[[], None] | None = None,
        spawn: ProcessSpec | None = None,
    ) -> None:
        self.photon, self.settings, self.on_ready = photon, settings or ServeSettings(), on_ready
        s = self.settings
        self.handlers = {
            name: replace(
                h,
                max_batch_size=s.max_batch_size if s.max_batch_size and h.batched else h.max_batch_size,
                max_wait_ms=h.max_wait_ms if s.max_wait_ms is None else s.max_wait_ms,
            )
            for name, h in type(photon).handlers().items()
        }
        if not self.handlers:
            raise LeptonError(f"{type(photon).__name__} has no @handler methods to serve")
        if spawn is not None and any(inspect.iscoroutinefunction(h.fn) for h in self.handlers.values()):
            raise LeptonError(f"{type(photon).__name__}: a model process runs synchronous handlers only")
        self.process = (
            ModelProcess(
                spawn,
                {
                    name: {
                        "batched": h.batched,
                        "max_batch_size": h.max_batch_size or 1,
                        "max_wait": h.max_wait_ms / 1000,
                    }
                    for name, h in self.handlers.items()
                },
            )
            if spawn
            else None
        )
        self.models = {name: h.request_model(type(photon)) for name, h in self.handlers.items()}
        self.adapters = {name: TypeAdapter(m) for name, m in self.models.items()}
        self.metrics = Metrics()
        self.batchers: dict[str, HandlerQueue] = {}
        self._depth_changed: dict[str, Callable[[], None]] = {}
        self.state, self.error = "starting", ""
        self.inflight = 0
        self._inflight_changed = self.metrics.gauge(self.metrics.inflight, lambda: self.inflight)
        self._token = _token_digest(self.settings)
        self._routes = {f"/{name}": name for name in self.handlers}
        # private: a middleware added to it would miss the handler calls `_dispatch` answers itself
        self._app = self._fastapi()
        self._entry: ASGIApp = self._dispatch

    # -- lifecycle -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start the batchers and `init` (in a thread, so health answers meanwhile); drain on exit."""
        for name, h in self.handlers.items():
            # an async handler is awaited on the event loop: no queue
            if not inspect.iscoroutinefunction(h.fn):
                self.batchers[name] = self._start_batcher(name, h)
        if self.process:
            self.process.on_exit = self._restart
        self._starting = asyncio.create_task(self._init())
        try:
            yield
        finally:
            self._starting.cancel()
            await asyncio.gather(*(b.stop() for b in self.batchers.values()))
            if self.process:
                await self.process.stop()

    def _start_batcher(self, name: str, h: Handler) -> HandlerQueue:
        """Start handler `name`'s queue, in the model process or on threads here, with its metrics."""
        options: dict[str, Any] = {
            "batched": h.batched,
            "max_batch_size": h.max_batch_size or 1,
            "max_wait_ms": h.max_wait_ms,
            "max_queue": self.settings.max_queue,
        }
        batcher: HandlerQueue = (
            ProcessBatcher(self.process, name, **options)
            if self.process
            else Batcher(getattr(self.photon, name), concurrency=h.concurrency, **options)
        )
        sizes = self.metrics.batch_size.labels(name)
        depth_changed = self.metrics.gauge(self.metrics.queue_depth.labels(name), lambda: batcher.depth)

        def on_batch(calls: list[int], depth: int) -> None:
            for size in calls:
                sizes.observe(size)
            depth_changed()

        batcher.on_batch, self._depth_changed[name] = on_batch, depth_changed
        batcher.start()
        return batcher

    async def _init(self) -> None:
        try:
            if self.process:
                await self.process.start()
            else:
                await asyncio.to_thread(self.photon.init)
            # before the first request is let in
            if self.on_ready is not None and self.state == "starting":
                self.on_ready()
            self.state = "ready"
            log.info("%s ready", type(self.photon).__name__)
        except ModelProcessFailed as e:
            # it logged why; the message names only the exception's type
            self.state, self.error = "failed", str(e)
        except Exception as e:
            # reported by /healthz and /readyz so an orchestrator restarts us
            self.state, self.error = "failed", f"{type(e).__name__} in init (see the server's log)"
            log.exception("init failed")

    def _restart(self, why: str) -> None:
        """The model process died after it was ready: not ready until another one is."""
        self.state = "restarting"
        self._starting = asyncio.create_task(self._init())

    # -- requests ------------------------------------------------------------------------

    def _check_token(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        digest = hashlib.sha256(given.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self._token):
            raise HTTPError(
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is required",
                {"WWW-Authenticate": "Bearer"},
            )

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, "body_too_large", f"the body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, name: str, h: Handler, body: bytes) -> dict[str, Any]:
        try:
            parsed = self.adapters[name].validate_json(body or b"{}")
        except ValidationError as e:
            raise _first_error(e) from None
        fields = {k: getattr(parsed, k) for k in type(parsed).model_fields}
        if h.batch_field:
            n = len(fields[h.batch_field])
            if not n:
                raise HTTPError(422, "invalid_input", f"{h.batch_field}: the list of examples is empty")
            if n > self.settings.max_examples:
                raise HTTPError(
                    413,
                    "too_many_examples",
                    f"{h.batch_field}: {n} examples; at most {self.settings.max_examples} per request",
                )
        if h.prepare_fn is not None:
            try:
                fields = h.prepare_fn(self.photon, **fields)
            except (ValueError, TypeError, OverflowError, LeptonError) as e:
                raise HTTPError(422, "invalid_input", str(e)) from None
        return fields

    async def _fields(self, name: str, h: Handler, request: Request) -> dict[str, Any]:
        """Read and validate the body; a large one off the event loop, so it cannot stall the others."""
        body = await self._body(request)
        if len(body) > _INLINE_BYTES:
            return await asyncio.to_thread(self._parse, name, h, body)
        return self._parse(name, h, body)

    async def _run(self, name: str, h: Handler, fields: dict[str, Any], request: Request) -> Any:
        timeout = h.timeout_s or self.settings.timeout_s
        # an async handler: awaited on the event loop
        if name not in self.batchers:
            try:
                return await asyncio.wait_for(getattr(self.photon, name)(**fields), timeout)
            except asyncio.TimeoutError:
                raise HTTPError(504, "timeout", f"no answer within {timeout:g} s") from None
        batcher = self.batchers[name]
        payload = fields.pop(h.batch_field) if h.batch_field else fields
        try:
            future = batcher.submit(payload, fields if h.batch_field else {})
        except Overloaded:
            raise _queue_full(batcher) from None
        self._depth_changed[name]()
        # A timer and a disconnect watcher cancel the future; cheaper than asyncio.wait per request.
        why: list[int] = []

        def give_up(status: int) -> None:
            if not future.done():
                why.append(status)
                # dropped from its batch if not yet started
                future.cancel()

        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, give_up, 504)
        watcher = loop.create_task(_disconnected(request))
        watcher.add_done_callback(lambda _: give_up(499))
        try:
            return await future
        except asyncio.CancelledError:
            if not why:
                # the server itself is stopping this request
                raise
            if why[0] == 504:
                raise HTTPError(504, "timeout", f"no answer within {timeout:g} s") from None
            raise HTTPError(499, "client_closed", "the client closed the connection") from None
        finally:
            timer.cancel()
            watcher.cancel()

    async def handle(self, name: str, request: Request) -> Response:
        """Answer one request to handler `name`: checks, queue, result or a JSON error."""
        h, start = self.handlers[name], time.perf_counter()
        self.inflight += 1
        self._inflight_changed()
        try:
            self._check_token(request)
            if self.state != "ready":
                raise HTTPError(503, "not_ready", f"the service is {self.state}", {"Retry-After": "1"})
            if self.inflight > self.settings.max_concurrency:
                raise HTTPError(
                    503,
                    "overloaded",
                    f"over {self.settings.max_concurrency} concurrent requests; retry later",
                    {"Retry-After": "1"},
                )
            batcher = self.batchers.get(name)
            # refused before the body is even read
            if batcher is not None and batcher.full:
                raise _queue_full(batcher)
            fields = await self._fields(name, h, request)
            result = await self._run(name, h, fields, request)
            response = json_response({"outputs": result} if h.batched else result)
        except HTTPError as e:
            response = e.response()
        except ClientDisconnect:
            # gone while sending its body
            response = HTTPError(499, "client_closed", "the client closed the connection").response()
        except (ValueError, OverflowError, LeptonError) as e:
            # the handler refused this input
            response = HTTPError(422, "invalid_input", str(e)).response()
        except Exception as e:
            kind = e.kind if isinstance(e, HandlerFailed) else type(e).__name__
            # the model process logged its own
            if not isinstance(e, HandlerFailed):
                log.exception("handler %s failed", name)
            response = HTTPError(500, "internal", f"{kind} in handler {name}").response()
        finally:
            self.inflight -= 1
            self._inflight_changed()
        self.metrics.answered(name, response.status_code, time.perf_counter() - start)
        return response

    # -- the app -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: through the middleware added with `add_middleware`, if any, to `_dispatch`."""
        await self._entry(scope, receive, send)

    def add_middleware(self, middleware: Callable[..., ASGIApp], **options: Any) -> None:
        """Wrap the whole service in an ASGI middleware (as Starlette's `add_middleware` takes it: a class
        called with the app and `options`): it sees handler calls, health, metrics and docs alike. The
        middleware added last runs first. Add them before the service starts."""
        self._entry = middleware(self._entry, **options)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handler calls go straight to `handle` (no middleware stack or routing on the hot path);
        everything else (health, metrics, docs, lifespan) to the FastAPI app."""
        # mounted under a prefix (Ray Serve)
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        name = self._routes.get(path) if scope["type"] == "http" else None
        if name is not None and scope["method"] == "POST":
            response = await self.handle(name, Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    def _fastapi(self) -> FastAPI:
        """Return the FastAPI app: health, metrics, docs, and the handler routes for the docs' sake."""
        title, description = self.photon.describe()
        app = HandlerDocs(
            self.handlers,
            self.models,
            bool(self._token),
            title=title,
            version=__version__,
            lifespan=self.lifespan,
            description=description,
        )

        @app.get("/healthz", tags=["health"])
        def healthz() -> Response:
            """Alive (500 when init failed)."""
            # the exception's type only: health is unauthenticated
            if self.state == "failed":
                return json_response({"status": "failed", "error": self.error}, 500)
            return json_response({"status": "ok"})

        @app.get("/readyz", tags=["health"])
        def readyz() -> Response:
            """Ready to answer (only after init finished)."""
            body = {"status": self.state, **({"error": self.error} if self.error else {})}
            return json_response(body, 200 if self.state == "ready" else 503)

        @app.get("/metrics", tags=["health"])
        def metrics() -> Response:
            """Prometheus metrics."""
            return Response(self.metrics.render(), media_type=self.metrics.content_type)

        for name in self.handlers:

            async def endpoint(request: Request, name: str = name) -> Response:
                return await self.handle(name, request)

            app.router.routes.append(Route(f"/{name}", endpoint, methods=["POST"], name=name))
        return app


def build_app(photon: Photon, settings: ServeSettings | None = None) -> Service:
    """Return the ASGI app serving `photon` with `settings`."""
    return Service(photon, settings)


def _token_digest(settings: ServeSettings) -> bytes | None:
    """Return the sha256 a request's bearer token must hash to, from the token or its digest; None: open."""
    if settings.token:
        return hashlib.sha256(settings.token.encode()).digest()
    if settings.token_sha256:
        try:
            return bytes.fromhex(settings.token_sha256)
        except ValueError:
            raise InvalidInputError("token_sha256 must be a sha256 in hex") from None
    return None
