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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.serve.answers import HTTPError, first_error, json_response, queue_full
from lepton_ai.serve.batching import Batcher, HandlerQueue, Overloaded
from lepton_ai.serve.metrics import Metrics
from lepton_ai.serve.openapi import Examples, HandlerDocs
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
# bodies being read at once, per request that may run: a stalled client holds one for read_timeout_s at most
_READERS_PER_SLOT = 4
_RETRY = {"Retry-After": "1"}
Fields = dict[str, Any] | Awaitable[dict[str, Any]]
_STATUS = {"description": "not alive or not ready, and why"}


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
    # the time a client has to send a request's body (its headers: serve.http.HEADER_TIMEOUT_S)
    read_timeout_s: float = 10.0
    # None: as the Photon asks (see `Photon.model_process`)
    model_process: bool | None = None


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
        self.inflight = self.reading = 0
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

    def _admit(self, name: str, request: Request) -> None:
        """Refuse, before reading its body, a request without the token, to a service not ready or a full
        queue."""
        self._check_token(request)
        if self.state != "ready":
            raise HTTPError(503, "not_ready", f"the service is {self.state}", {"Retry-After": "1"})
        batcher = self.batchers.get(name)
        if batcher is not None and batcher.full:
            raise queue_full(batcher)
        if self.reading >= _READERS_PER_SLOT * self.settings.max_concurrency:
            raise HTTPError(503, "overloaded", "too many request bodies being read; retry later", _RETRY)

    async def _body(self, request: Request) -> bytes:
        """Return the body, read within `read_timeout_s` (a client that stalls is answered 408)."""
        timeout = self.settings.read_timeout_s
        self.reading += 1
        try:
            async with asyncio.timeout(timeout):
                return await self._read(request)
        except TimeoutError:
            # the rest of the body may still come: not on this connection
            closing = {"Connection": "close"}
            raise HTTPError(
                408, "body_timeout", f"the body did not arrive within {timeout:g} s", closing
            ) from None
        finally:
            self.reading -= 1

    async def _read(self, request: Request) -> bytes:
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

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        """Count a request in flight while it runs (its body in); over `max_concurrency`, refuse it."""
        self.inflight += 1
        self._inflight_changed()
        try:
            if self.inflight > self.settings.max_concurrency:
                raise HTTPError(
                    503,
                    "overloaded",
                    f"over {self.settings.max_concurrency} concurrent requests; retry later",
                    _RETRY,
                )
            yield
        finally:
            self.inflight -= 1
            self._inflight_changed()

    def _parse(self, name: str, h: Handler, body: bytes) -> Fields:
        try:
            parsed = self.adapters[name].validate_json(body or b"{}")
        except ValidationError as e:
            raise first_error(e) from None
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

    async def _fields(self, name: str, h: Handler, body: bytes, deadline: float) -> dict[str, Any]:
        """Validate and prepare the body: a large one off the event loop, so it cannot stall the others; what
        `prepare` hands over as an awaitable (decoding images elsewhere) is awaited within the deadline."""
        if len(body) > _INLINE_BYTES:
            fields = await asyncio.to_thread(self._parse, name, h, body)
        else:
            fields = self._parse(name, h, body)
        if not inspect.isawaitable(fields):
            return fields
        try:
            async with asyncio.timeout_at(deadline):
                return await fields
        except TimeoutError:
            raise _timeout(h, self.settings) from None
        except Overloaded as e:
            raise HTTPError(503, "overloaded", str(e), _RETRY) from None

    async def _run(
        self, name: str, h: Handler, fields: dict[str, Any], request: Request, deadline: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        # an async handler: awaited on the event loop
        if name not in self.batchers:
            try:
                async with asyncio.timeout_at(deadline):
                    return await getattr(self.photon, name)(**fields)
            except TimeoutError:
                raise _timeout(h, self.settings) from None
        batcher = self.batchers[name]
        payload = fields.pop(h.batch_field) if h.batch_field else fields
        try:
            future = batcher.submit(payload, fields if h.batch_field else {})
        except Overloaded:
            raise queue_full(batcher) from None
        self._depth_changed[name]()
        # A timer and a disconnect watcher cancel the future; cheaper than asyncio.wait per request.
        why: list[int] = []

        def give_up(status: int) -> None:
            if not future.done():
                why.append(status)
                # dropped from its batch if not yet started
                future.cancel()

        timer = loop.call_at(deadline, give_up, 504)
        watcher = loop.create_task(_disconnected(request))
        watcher.add_done_callback(lambda _: give_up(499))
        try:
            return await future
        except asyncio.CancelledError:
            if not why:
                # the server itself is stopping this request
                raise
            if why[0] == 504:
                raise _timeout(h, self.settings) from None
            raise HTTPError(499, "client_closed", "the client closed the connection") from None
        finally:
            timer.cancel()
            watcher.cancel()

    async def handle(self, name: str, request: Request) -> Response:
        """Answer one request to handler `name`: checks, body, queue, result or a JSON error."""
        h, start = self.handlers[name], time.perf_counter()
        try:
            self._admit(name, request)
            body = await self._body(request)
            with self._counted():
                # from the moment the body is in: decoding it counts
                deadline = asyncio.get_running_loop().time() + (h.timeout_s or self.settings.timeout_s)
                fields = await self._fields(name, h, body, deadline)
                result = await self._run(name, h, fields, request, deadline)
            response = json_response({h.answers: result} if h.batched else result)
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
        schemas = {name: self.photon.example_schema(name) for name, h in self.handlers.items() if h.batched}
        app = HandlerDocs(
            self.handlers,
            self.models,
            bool(self._token),
            Examples(self.settings.max_examples, {k: v for k, v in schemas.items() if v is not None}),
            title=title,
            version=__version__,
            lifespan=self.lifespan,
            description=description,
        )

        @app.get("/healthz", tags=["health"], responses={500: _STATUS})
        def healthz() -> Response:
            """Alive (500 when init failed)."""
            # the exception's type only: health is unauthenticated
            if self.state == "failed":
                return json_response({"status": "failed", "error": self.error}, 500)
            return json_response({"status": "ok"})

        @app.get("/readyz", tags=["health"], responses={503: _STATUS})
        def readyz() -> Response:
            """Ready to answer (only after init finished)."""
            body = {"status": self.state, **({"error": self.error} if self.error else {})}
            return json_response(body, 200 if self.state == "ready" else 503)

        @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
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


def _timeout(h: Handler, settings: ServeSettings) -> HTTPError:
    return HTTPError(504, "timeout", f"no answer within {h.timeout_s or settings.timeout_s:g} s")
