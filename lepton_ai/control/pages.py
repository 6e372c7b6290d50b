"""The dashboard's pages: server-rendered HTML over the same query layer as the REST API, at fixed paths so
links can be shared; forms that change something are POSTs carrying the session's CSRF token."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from lepton_ai.control.charts import Series, bar_chart, line_chart
from lepton_ai.control.listing import Id, thin
from lepton_ai.control.queries import Control
from lepton_ai.control.session import Sessions
from lepton_ai.errors import InvalidInputError, LeptonError
from lepton_ai.machine import describe, light_machine_info
from lepton_ai.store.registry import RunInfo

TEMPLATES = Path(__file__).parent / "templates"
# every overlaid chart stays under this many points, so comparing 50 runs is still a light page
CHART_POINTS = 4000
Cursor = Annotated[str | None, Query()]
# metrics named SPLIT_MEASURE are drawn on one chart per measure
SPLITS = ("train", "val", "test")


def templates() -> Jinja2Templates:
    """Return the page templates, every value escaped unless marked safe (charts, built escaped)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["num"] = _num
    env.filters["refpath"] = _refpath
    env.filters["datapath"] = functools.partial(_refpath, root="/datasets")
    env.filters["pretty"] = functools.partial(json.dumps, indent=2, sort_keys=True, default=str)
    return Jinja2Templates(env=env)


def _num(value: Any) -> str:
    """Format a metric for a table: integers whole, floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _refpath(ref: str, root: str = "/models") -> str:
    """Return the page of a NAME:VERSION reference: a model version's, or under `root` a dataset's."""
    name, _, version = ref.rpartition(":")
    return f"{root}/{quote(name)}/{quote(version)}"


class Pages:
    """What every page needs: the queries, the sessions, whether actions are allowed, the templates."""

    def __init__(self, control: Control, sessions: Sessions, read_only: bool) -> None:
        self.control, self.sessions, self.read_only = control, sessions, read_only
        self.templates = templates()

    def render(self, request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        """Render a template with the session's CSRF token and the dashboard's mode."""
        sid = getattr(request.state, "sid", None)
        context |= {
            "csrf": self.sessions.csrf(sid) if sid else "",
            "read_only": self.read_only,
            "signed_in": self.sessions.required and sid is not None,
        }
        return self.templates.TemplateResponse(request, template, context, status_code=code)

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        """Render the error page: what went wrong, in the words of the registry."""
        return self.render(request, "error.html", status, status_code=status, message=message)

    def act(self, request: Request, csrf: str) -> None:
        """Refuse an action in read-only mode or without the session's CSRF token."""
        if self.read_only:
            raise Refused(403, "this dashboard is read-only (--read-only): actions are off")
        if not self.sessions.csrf_ok(request, csrf):
            raise Refused(403, "the form's CSRF token is missing or stale: reload the page and try again")


class Refused(LeptonError):
    """An action the dashboard will not take, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def pages_router(pages: Pages) -> APIRouter:
    """Return the HTML pages: overview, models, datasets, runs, jobs, services, sign-in."""
    router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
    _overview(router, pages)
    _model_pages(router, pages)
    _dataset_pages(router, pages)
    _run_pages(router, pages)
    _job_pages(router, pages)
    _service_pages(router, pages)
    return router


def _overview(router: APIRouter, pages: Pages) -> None:
    """The front page and signing in and out."""
    machine = functools.cache(light_machine_info)
    control = pages.control

    @router.get("/")
    def overview(request: Request) -> HTMLResponse:
        info = machine()
        return pages.render(
            request,
            "overview.html",
            counts=control.counts(),
            versions=control.recent_versions(),
            runs=control.runs(8).items,
            jobs=control.jobs(8).items,
            machine=info,
            described=describe(info),
        )

    @router.get("/login")
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return pages.render(request, "login.html", next=_local(next), failed=False)

    @router.post("/login", response_model=None)
    def login(
        request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
    ) -> Response:
        if not pages.sessions.token_ok(token):
            return pages.render(request, "login.html", 401, next=_local(next), failed=True)
        response = RedirectResponse(_local(next), status_code=303)
        pages.sessions.set_cookie(response, pages.sessions.start(), request.url.scheme == "https")
        return response

    @router.post("/logout")
    def logout(request: Request) -> RedirectResponse:
        pages.sessions.end(request)
        return RedirectResponse("/login", status_code=303)


def _local(path: str) -> str:
    """Return `path` when it stays on this site (so a sign-in link cannot send anyone elsewhere), else /."""
    return path if path.startswith("/") and not path.startswith(("//", "/\\")) else "/"


def _model_pages(router: APIRouter, pages: Pages) -> None:
    """Models, a model's versions, one version with its lineage, report, privacy and verification."""
    control = pages.control

    @router.get("/models")
    def models(request: Request, contains: str = "", cursor: Cursor = None) -> HTMLResponse:
        listed = control.models(50, cursor, contains or None)
        more = _more(listed.next_cursor, contains=contains)
        return pages.render(request, "models.html", page=listed, contains=contains, more=more)

    @router.get("/models/{name}")
    def model(request: Request, name: str, cursor: Cursor = None) -> HTMLResponse:
        listed = control.versions(name, 50, cursor)
        return pages.render(request, "model.html", name=name, page=listed, more=_more(listed.next_cursor))

    @router.get("/models/{name}/{version}")
    def version(request: Request, name: str, version: Id, verified: str = "") -> HTMLResponse:
        view = control.version(name, version)
        card = control.cost(view.info)
        return pages.render(
            request, "version.html", view=view, v=view.info, cost=card, verified=verified == "1"
        )

    @router.get("/models/{name}/{version}/explanations")
    def explanations(
        request: Request,
        name: str,
        version: Id,
        data: str = "",
        count: Annotated[int, Query(ge=1, le=16)] = 4,
    ) -> HTMLResponse:
        from lepton_ai.control.explanations import data_of, explain_version

        info = control.version(name, version).info
        source = data_of(control.registry, info, data or None)
        shown = explain_version(info.ref, source, count)
        return pages.render(request, "explanations.html", v=info, data=source, shown=shown)

    @router.get("/models/{name}/{version}/files/{file}", response_class=Response)
    def report_file(name: str, version: Id, file: str) -> Response:
        media = {"png": "image/png", "json": "application/json"}.get(file.rsplit(".", 1)[-1], "text/plain")
        return Response(control.report_file(name, version, file), media_type=media)

    @router.post("/models/{name}/{version}/verify")
    def verify(
        request: Request, name: str, version: Id, csrf: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        pages.act(request, csrf)
        control.verify(name, version)
        return RedirectResponse(f"/models/{name}/{version}?verified=1", status_code=303)


def _dataset_pages(router: APIRouter, pages: Pages) -> None:
    """Datasets, a dataset's versions, one version with its class balance, what was left out and why, its
    schema, and the models trained on it."""
    control = pages.control

    @router.get("/datasets")
    def datasets(request: Request, cursor: Cursor = None) -> HTMLResponse:
        listed = control.datasets(50, cursor)
        return pages.render(request, "datasets.html", page=listed, more=_more(listed.next_cursor))

    @router.get("/datasets/{name}")
    def dataset(request: Request, name: str, cursor: Cursor = None) -> HTMLResponse:
        listed = control.dataset_versions(name, 50, cursor)
        return pages.render(request, "dataset.html", name=name, page=listed, more=_more(listed.next_cursor))

    @router.get("/datasets/{name}/{version}")
    def dataset_version(request: Request, name: str, version: Id) -> HTMLResponse:
        view = control.dataset_version(name, version)
        chart = bar_chart("records per class", view.info.stats.get("classes") or {})
        return pages.render(request, "dataset_version.html", view=view, d=view.info, chart=chart)


def _more(cursor: str | None, **filters: str) -> str | None:
    """Return the query string of the next page (the filters kept), or None on the last page."""
    if cursor is None:
        return None
    return "?" + urlencode({**{k: v for k, v in filters.items() if v}, "cursor": cursor})


def _run_pages(router: APIRouter, pages: Pages) -> None:
    """Runs with min, max and last of each metric; one run's charts; several runs compared."""
    control = pages.control

    @router.get("/runs")
    def runs(request: Request, kind: str = "", status: str = "", cursor: Cursor = None) -> HTMLResponse:
        listed = control.runs(50, cursor, kind or None, status or None)
        more = _more(listed.next_cursor, kind=kind, status=status)
        return pages.render(request, "runs.html", page=listed, kind=kind, status=status, more=more)

    @router.get("/runs/compare")
    def compare(
        request: Request, ids: Annotated[list[str] | None, Query()] = None, diff: bool = False
    ) -> HTMLResponse:
        chosen = control.compare(_ids(ids or []))
        params = _param_rows(chosen, only_differences=diff)
        charts = _charts(chosen, max(2, CHART_POINTS // len(chosen)))
        query = ",".join(str(r.id) for r in chosen)
        keys = sorted({k for r in chosen for k in r.summary})
        return pages.render(
            request,
            "compare.html",
            runs=chosen,
            keys=keys,
            params=params,
            charts=charts,
            diff=diff,
            ids=query,
        )

    @router.get("/runs/{run_id}")
    def run(request: Request, run_id: Id) -> HTMLResponse:
        info = control.run(run_id)
        return pages.render(request, "run.html", run=info, charts=_run_charts(info))


def _ids(values: list[str]) -> list[int]:
    """Return run ids given as `ids=1,2,3` or `ids=1&ids=2` (both are shared as links)."""
    parts = [p.strip() for v in values for p in v.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise InvalidInputError("ids must list run ids, e.g. /runs/compare?ids=1,2,3")
    return [int(p) for p in parts]


def _param_rows(runs: list[RunInfo], only_differences: bool) -> list[tuple[str, list[Any]]]:
    """Return each parameter with its value in every run (missing as None), or only those that differ."""
    keys = sorted({k for r in runs for k in r.params})
    rows = [(k, [r.params.get(k) for r in runs]) for k in keys]
    return [(k, vs) for k, vs in rows if not only_differences or len({repr(v) for v in vs}) > 1]


def _charts(runs: list[RunInfo], points: int) -> list[Markup]:
    """Return one chart per metric, the runs overlaid (labelled by run), each series thinned on the server;
    a metric logged once per run is left to the table."""
    keys = sorted({k for r in runs for k in r.history if len(r.history[k]) > 1})
    return [
        line_chart(
            k, [Series(f"run {r.id} {r.name}", thin(r.history[k], points)) for r in runs if k in r.history]
        )
        for k in keys
    ]


def _run_charts(run: RunInfo, points: int = 500) -> list[Markup]:
    """Return a run's charts, a split's figures together (train_loss and val_loss on one); a metric logged
    once is left to the table."""
    groups: dict[str, list[Series]] = {}
    for key, series in sorted(run.history.items()):
        if len(series) < 2:
            continue
        split, _, measure = key.partition("_")
        group = measure if split in SPLITS and measure else key
        groups.setdefault(group, []).append(Series(key, thin(series, points)))
    return [line_chart(name, series) for name, series in groups.items()]


def _job_pages(router: APIRouter, pages: Pages) -> None:
    """Jobs; one job with its attempts, its log followed live, and cancel and retry."""
    control = pages.control

    @router.get("/jobs")
    def jobs(request: Request, state: str = "", backend: str = "", cursor: Cursor = None) -> HTMLResponse:
        listed = control.jobs(50, cursor, state or None, backend or None)
        more = _more(listed.next_cursor, state=state, backend=backend)
        return pages.render(request, "jobs.html", page=listed, state=state, backend=backend, more=more)

    @router.get("/jobs/{job_id}")
    def job(request: Request, job_id: Id) -> HTMLResponse:
        view = control.job(job_id)
        return pages.render(
            request, "job.html", job=view.info, attempts=view.attempts, log=control.log(job_id)
        )

    @router.post("/jobs/{job_id}/cancel")
    def cancel(request: Request, job_id: Id, csrf: Annotated[str, Form()] = "") -> RedirectResponse:
        pages.act(request, csrf)
        control.cancel(job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @router.post("/jobs/{job_id}/retry")
    def retry(request: Request, job_id: Id, csrf: Annotated[str, Form()] = "") -> RedirectResponse:
        pages.act(request, csrf)
        new = control.retry(job_id)
        return RedirectResponse(f"/jobs/{new.id}", status_code=303)


def _service_pages(router: APIRouter, pages: Pages) -> None:
    """Services with their health, probed when the page is asked for (it refreshes itself)."""
    control = pages.control

    @router.get("/services")
    def services(request: Request, live: str = "", cursor: Cursor = None) -> HTMLResponse:
        listed = control.services(50, cursor, {"yes": True, "no": False}.get(live))
        health = control.health(listed.items)
        more = _more(listed.next_cursor, live=live)
        return pages.render(request, "services.html", page=listed, health=health, live=live, more=more)
