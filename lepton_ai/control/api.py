"""The control plane's REST API under /api/v1: models, versions with their lineage, datasets with their
versions' stats, runs with metric summaries and thinned series, jobs with their attempts and logs — read from
the registry the CLI uses, each list paged with a cursor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lepton_ai.control.listing import MAX_LIMIT, Id
from lepton_ai.control.queries import Control
from lepton_ai.errors import IntegrityError, InvalidInputError, NotFoundError
from lepton_ai.store.datasets import DatasetInfo, DatasetVersionInfo

PREFIX = "/api/v1"
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="The next_cursor of the page before.")]


class ErrorBody(BaseModel):
    """What every error answers: a short code and a sentence naming the problem."""

    error: str
    message: str


# documented on every route, so a client (and a fuzzer) knows the shape of each refusal
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "A bearer token (or a signed-in session) is required."},
    404: {"model": ErrorBody, "description": "What the path names is not there."},
    422: {"model": ErrorBody, "description": "A parameter is malformed."},
}


class DatasetList(BaseModel):
    """A page of datasets and the cursor to the next one (None: the list ended)."""

    items: list[DatasetInfo]
    next_cursor: str | None


class Quarantined(BaseModel):
    """A record left out for failing its checks: a file's path or a table's row, and why."""

    record: str | int
    reason: str


class Duplicate(BaseModel):
    """A record left out as an exact copy of one kept."""

    record: str | int
    of: str | int


class DatasetStats(BaseModel):
    """What a version holds (by class and split, how many records are new since the version before) and what
    its add left out (counts whole, the first records of each listed); how the splits were drawn."""

    # a later add may count more (label issues): what is not named here still comes through
    model_config = ConfigDict(extra="allow")

    classes: dict[str, int] = Field(default_factory=dict)
    splits: dict[str, int] = Field(default_factory=dict)
    new_records: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantine: list[Quarantined] = Field(default_factory=list)
    duplicate_records: list[Duplicate] = Field(default_factory=list)
    fractions: list[float] = Field(default_factory=list)
    seed: int | None = None


class DatasetVersionBase(BaseModel):
    """A dataset version as every answer names it."""

    ref: str
    name: str
    version: int
    format: str
    records: int
    size_bytes: int
    stored_bytes: int
    source: str
    created_at: str | None


class DatasetVersionSummary(DatasetVersionBase):
    """A version as a list shows it: its counts, not the records its stats list."""

    new_records: int = 0
    quarantined: int = 0
    duplicates: int = 0
    splits: dict[str, int] = Field(default_factory=dict)


class DatasetVersionList(BaseModel):
    """A page of a dataset's versions, newest first, and the cursor to the next one."""

    items: list[DatasetVersionSummary]
    next_cursor: str | None


class TrainedModel(BaseModel):
    """A model version trained on a dataset version."""

    ref: str
    metrics: dict[str, Any]
    created_at: str | None


class DatasetVersionDetail(DatasetVersionBase):
    """One version: its manifest, stats and schema, and the model versions trained on it."""

    manifest_key: str
    manifest_sha256: str
    stats: DatasetStats
    # `schema` is a pydantic method's name: the field is spelt apart, the JSON key is not
    data_schema: dict[str, Any] = Field(alias="schema")
    models: list[TrainedModel]


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def api_router(control: Control) -> APIRouter:
    """Return the API's routes over `control` (the pages ask the same questions of the same object)."""
    router = APIRouter(prefix=PREFIX, responses=ERRORS)
    _models(router, control)
    _datasets(router, control)
    _runs(router, control)
    _jobs(router, control)
    _services(router, control)
    return router


def _models(router: APIRouter, control: Control) -> None:
    """Models and their versions, with lineage and report files."""

    @router.get("/models")
    def models(limit: Limit = 50, cursor: Cursor = None, contains: str | None = None) -> dict[str, Any]:
        """Models by name, each with its number of versions and its latest."""
        return control.models(limit, cursor, contains).to_dict()

    @router.get("/models/{name}/versions")
    def versions(name: str, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
        """A model's versions, newest first, with metrics, recipe and parent."""
        return control.versions(name, limit, cursor).to_dict()

    @router.get("/models/{name}/versions/{version}")
    def version(name: str, version: Id) -> dict[str, Any]:
        """One version, with the versions made from it (its children), its report's files and its last privacy
        audit."""
        view = control.version(name, version)
        report = {"files": view.report.files, "problem": view.report.problem}
        return {
            **view.info.to_dict(),
            "children": [c.ref for c in view.children],
            "report": report,
            "privacy_audit": view.audit,
            "cost": control.cost(view.info).to_dict(),
        }


def _datasets(router: APIRouter, control: Control) -> None:
    """Datasets, a dataset's versions, and one version with its stats and the models trained on it."""

    @router.get("/datasets")
    def datasets(limit: Limit = 50, cursor: Cursor = None) -> DatasetList:
        """Datasets by name, each with its format, latest version and that version's records."""
        listed = control.datasets(limit, cursor)
        return DatasetList(items=listed.items, next_cursor=listed.next_cursor)

    @router.get("/datasets/{name}")
    def dataset(name: str, limit: Limit = 50, cursor: Cursor = None) -> DatasetVersionList:
        """A dataset's versions, newest first: records, new records, what was left out, splits."""
        listed = control.dataset_versions(name, limit, cursor)
        return DatasetVersionList(items=[_summary(v) for v in listed.items], next_cursor=listed.next_cursor)

    @router.get("/datasets/{name}/{version}")
    def dataset_version(name: str, version: Id) -> DatasetVersionDetail:
        """One version: its stats (classes, splits, quarantined records with why, duplicates), schema, source,
        and the model versions trained on it."""
        view = control.dataset_version(name, version)
        models = [{"ref": m.ref, "metrics": m.metrics, "created_at": m.created_at} for m in view.models]
        return DatasetVersionDetail.model_validate({**view.info.to_dict(), "models": models})


def _summary(info: DatasetVersionInfo) -> DatasetVersionSummary:
    """Return a version's counts without the records its stats list."""
    counts = {
        k: info.stats[k] for k in ("new_records", "quarantined", "duplicates", "splits") if k in info.stats
    }
    return DatasetVersionSummary.model_validate({**info.to_dict(), **counts})


def _runs(router: APIRouter, control: Control) -> None:
    """Runs with their metric summaries and thinned series."""

    @router.get("/runs")
    def runs(
        limit: Limit = 50, cursor: Cursor = None, kind: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """Runs, newest first, each metric summarised (points, min, max, last), without its series."""
        return control.runs(limit, cursor, kind, status).to_dict()

    @router.get("/runs/{run_id}")
    def run(run_id: Id) -> dict[str, Any]:
        """One run: its parameters, status and metric summaries."""
        info = control.run(run_id).to_dict()
        return {k: v for k, v in info.items() if k != "history"}

    @router.get("/runs/{run_id}/metrics")
    def metrics(
        run_id: Id,
        key: Annotated[list[str] | None, Query(description="Only these metrics (repeatable).")] = None,
        points: Annotated[int, Query(ge=2, le=10_000, description="At most this many points each.")] = 500,
    ) -> dict[str, Any]:
        """A run's metric series as [step, value] pairs, thinned to `points` (each bucket's min and max)."""
        return control.series(control.run(run_id), points, key)


def _jobs(router: APIRouter, control: Control) -> None:
    """The jobs: their list, each with its attempts, and its log from an offset (to follow it)."""

    @router.get("/jobs")
    def jobs(
        limit: Limit = 50, cursor: Cursor = None, state: str | None = None, backend: str | None = None
    ) -> dict[str, Any]:
        """Jobs, newest first, as `lepton job list --json` prints them."""
        return control.jobs(limit, cursor, state, backend).to_dict()

    @router.get("/jobs/{job_id}")
    def job(job_id: Id) -> dict[str, Any]:
        """One job with each of its attempts (worker, exit code, error, times)."""
        view = control.job(job_id)
        return {**view.info.to_dict(), "attempts": [asdict(a) for a in view.attempts]}

    @router.get("/jobs/{job_id}/log")
    def log(
        job_id: Id, offset: Annotated[int, Query(ge=0, description="Characters already read.")] = 0
    ) -> dict[str, Any]:
        """The latest attempt's log from `offset`; ask again from the returned offset until `done`."""
        return asdict(control.log(job_id, offset))


def _services(router: APIRouter, control: Control) -> None:
    """What `lepton serve` and `lepton deploy` recorded, with each one's health when asked."""

    @router.get("/services")
    def services(
        limit: Limit = 50,
        cursor: Cursor = None,
        live: Annotated[bool | None, Query(description="Only those answering (true) or not (false).")] = None,
        probe: Annotated[bool, Query(description="Ask each its /readyz and /metrics.")] = False,
    ) -> dict[str, Any]:
        """Services, newest first; with `probe`, each with its readiness, throughput, latency and errors."""
        listed = control.services(limit, cursor, live)
        health = control.health(listed.items) if probe else {}
        items = [
            {**s.to_dict(), **({"health": health[s.id].to_dict()} if probe else {})} for s in listed.items
        ]
        return {"items": items, "next_cursor": listed.next_cursor}

    @router.get("/services/{service_id}")
    def service(service_id: Id) -> dict[str, Any]:
        """One service with its health now."""
        info = control.service(service_id)
        return {**info.to_dict(), "health": control.health([info])[info.id].to_dict()}


# what the pages answer an error with, in place of JSON (outside /api/v1)
ErrorPage = Callable[[Request, int, str], Response]


def api_errors(app: FastAPI, page: ErrorPage | None = None) -> None:
    """Answer what the registry refuses: 404 for what is not there, 422 for what is malformed, 409 for a
    corrupted artifact — as JSON under /api/v1, and through `page` elsewhere."""

    def answer(request: Request, status: int, error: str, message: str) -> Response:
        if page is not None and not request.url.path.startswith(PREFIX):
            return page(request, status, message)
        return _error(status, error, message)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, e: NotFoundError) -> Response:
        return answer(request, 404, "not_found", str(e))

    @app.exception_handler(InvalidInputError)
    async def invalid(request: Request, e: InvalidInputError) -> Response:
        return answer(request, 422, "invalid_input", str(e))

    @app.exception_handler(IntegrityError)
    async def corrupted(request: Request, e: IntegrityError) -> Response:
        return answer(request, 409, "integrity_error", str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, e: StarletteHTTPException) -> Response:
        if e.status_code == 404:
            where = f"{PREFIX}/openapi.json lists them" if request.url.path.startswith(PREFIX) else "see /"
            return answer(request, 404, "not_found", f"no such path: {request.url.path} ({where})")
        return answer(request, e.status_code, "http_error", str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return answer(request, 422, "invalid_input", f"{where}: {first.get('msg', 'invalid')}")
