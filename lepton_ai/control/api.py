"""The control plane's REST API under /api/v1: models, versions with their lineage, runs with metric
summaries and thinned series, jobs with their attempts and logs — read from the registry the CLI uses, each
list paged with a cursor."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lepton_ai.control.listing import MAX_LIMIT, page, thin
from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs.api import logs
from lepton_ai.jobs.queue import JobInfo, JobQueue
from lepton_ai.store import Registry
from lepton_ai.store.refs import check_name
from lepton_ai.store.registry import RunInfo

PREFIX = "/api/v1"
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="The next_cursor of the page before.")]


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def api_app(registry: Registry | None = None, token: str | None = None) -> FastAPI:
    """Return the REST API over `registry` (the default one: LEPTON_DB_URL, LEPTON_ARTIFACTS); with `token`,
    every request must carry `Authorization: Bearer TOKEN`."""
    reg = registry or Registry()
    app = FastAPI(
        title="Lepton control plane", openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs"
    )
    _errors(app)
    if token:
        _require(app, token)

    @app.get(f"{PREFIX}/models")
    def models(limit: Limit = 50, cursor: Cursor = None, contains: str | None = None) -> dict[str, Any]:
        """Models by name, each with its number of versions and its latest."""
        fetch = functools.partial(reg.list_models, contains=contains)
        return page(fetch, lambda m: m.name, limit, cursor).to_dict()

    @app.get(f"{PREFIX}/models/{{name}}/versions")
    def versions(name: str, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
        """A model's versions, newest first, with metrics, recipe and parent."""
        fetch = functools.partial(reg.list_versions, name)
        return page(fetch, lambda v: v.version, limit, cursor).to_dict()

    @app.get(f"{PREFIX}/models/{{name}}/versions/{{version}}")
    def version(name: str, version: int) -> dict[str, Any]:
        """One version, with the versions made from it (its children)."""
        ref = f"{check_name(name)}:{version}"
        return {**reg.get(ref).to_dict(), "children": [c.ref for c in reg.children(ref)]}

    @app.get(f"{PREFIX}/runs")
    def runs(
        limit: Limit = 50, cursor: Cursor = None, kind: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """Runs, newest first, each metric summarised (points, min, max, last), without its series."""

        def fetch(before: int | None, n: int) -> list[RunInfo]:
            return reg.list_runs(kind, n, before=before, status=status, history=False)

        return page(fetch, lambda r: r.id, limit, cursor).to_dict()

    @app.get(f"{PREFIX}/runs/{{run_id}}")
    def run(run_id: int) -> dict[str, Any]:
        """One run: its parameters, status and metric summaries."""
        info = reg.get_run(run_id).to_dict()
        return {k: v for k, v in info.items() if k != "history"}

    @app.get(f"{PREFIX}/runs/{{run_id}}/metrics")
    def metrics(
        run_id: int,
        key: Annotated[list[str] | None, Query(description="Only these metrics (repeatable).")] = None,
        points: Annotated[int, Query(ge=2, le=10_000, description="At most this many points each.")] = 500,
    ) -> dict[str, Any]:
        """A run's metric series as [step, value] pairs, thinned to `points` (each bucket's min and max)."""
        history = reg.get_run(run_id).history
        unknown = sorted(set(key or ()) - set(history))
        if unknown:
            raise NotFoundError(f"run {run_id} has no metric {unknown[0]!r} (it has: {', '.join(history)})")
        return {k: thin(v, points) for k, v in history.items() if not key or k in key}

    _jobs(app, JobQueue(reg.db_url))
    return app


def _jobs(app: FastAPI, queue: JobQueue) -> None:
    """The jobs: their list, each with its attempts, and its log from an offset (to follow it)."""

    @app.get(f"{PREFIX}/jobs")
    def jobs(
        limit: Limit = 50, cursor: Cursor = None, state: str | None = None, backend: str | None = None
    ) -> dict[str, Any]:
        """Jobs, newest first, as `lepton job list --json` prints them."""

        def fetch(before: int | None, n: int) -> list[JobInfo]:
            return queue.list(state, backend, n, before=before)

        return page(fetch, lambda j: j.id, limit, cursor).to_dict()

    @app.get(f"{PREFIX}/jobs/{{job_id}}")
    def job(job_id: int) -> dict[str, Any]:
        """One job with each of its attempts (worker, exit code, error, times)."""
        return {**queue.get(job_id).to_dict(), "attempts": [asdict(a) for a in queue.attempts(job_id)]}

    @app.get(f"{PREFIX}/jobs/{{job_id}}/log")
    def log(
        job_id: int, offset: Annotated[int, Query(ge=0, description="Characters already read.")] = 0
    ) -> dict[str, Any]:
        """The latest attempt's log from `offset`; ask again from the returned offset until `done`."""
        # asked before reading: a job done by then has written all its log, so `done` ends a follow safely
        done = queue.get(job_id).done
        text = "".join(logs(job_id))
        return {"text": text[offset:], "offset": max(offset, len(text)), "done": done}


def _errors(app: FastAPI) -> None:
    """Answer what the registry refuses as JSON: 404 for what is not there, 422 for what is malformed."""

    @app.exception_handler(NotFoundError)
    async def not_found(_request: Request, e: NotFoundError) -> JSONResponse:
        return _error(404, "not_found", str(e))

    @app.exception_handler(InvalidInputError)
    async def invalid(_request: Request, e: InvalidInputError) -> JSONResponse:
        return _error(422, "invalid_input", str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            return _error(
                404, "not_found", f"no such path: {request.url.path} ({PREFIX}/openapi.json lists them)"
            )
        return _error(e.status_code, "http_error", str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_input", f"{where}: {first.get('msg', 'invalid')}")


def _require(app: FastAPI, token: str) -> None:
    """Refuse every request whose bearer token is not `token` (compared in constant time, never logged)."""
    expected = f"Bearer {token}".encode()

    @app.middleware("http")
    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "unauthorized", "a bearer token is required: Authorization: Bearer TOKEN")
        return await call_next(request)
