"""The dashboard process's web app: the REST API and the pages over one query layer, behind one guard
(bearer token or session cookie), with the pages' static files served from the package."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from lepton_ai.control.api import PREFIX, api_errors, api_router
from lepton_ai.control.pages import Pages, Refused, pages_router
from lepton_ai.control.queries import Control
from lepton_ai.control.session import Sessions
from lepton_ai.store import Registry
from lepton_ai.store.cost import Price

STATIC = Path(__file__).parent / "static"
# reachable without a session: the sign-in page and what it is drawn with
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")
# scripts only from this origin (no inline script can run even if a value slipped through unescaped)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def dashboard_app(
    registry: Registry | None = None,
    token: str | None = None,
    read_only: bool = False,
    price: Price | None = None,
) -> FastAPI:
    """Return the dashboard over `registry` (the default one: LEPTON_DB_URL, LEPTON_ARTIFACTS): the pages and
    the API under /api/v1; with `token`, API clients send it as a bearer token, browsers sign in with it;
    costs at `price` (the default instance's when None)."""
    control = Control(registry or Registry(), price)
    sessions = Sessions(token)
    pages = Pages(control, sessions, read_only)
    app = FastAPI(
        title="Lepton control plane", openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None
    )
    api_errors(app, pages.error)

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> Response:
        return pages.error(request, e.status, str(e))

    _guard(app, sessions)
    app.include_router(api_router(control))
    app.include_router(pages_router(pages))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _guard(app: FastAPI, sessions: Sessions) -> None:
    """Let in API clients with the token and browsers with a session; open a session for a browser when no
    token is needed (its forms need a CSRF token); time every answer (Server-Timing)."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        path, api = request.url.path, request.url.path.startswith(PREFIX)
        sid, opened = sessions.of(request), None
        if sessions.required and sid is None and not path.startswith(OPEN_PATHS):
            if api and sessions.bearer_ok(request):
                pass
            elif api:
                return JSONResponse(
                    {
                        "error": "unauthorized",
                        "message": "a bearer token is required: Authorization: Bearer TOKEN",
                    },
                    status_code=401,
                )
            else:
                target = quote(path + (f"?{request.url.query}" if request.url.query else ""))
                return RedirectResponse(f"/login?next={target}", status_code=303)
        if sid is None and not sessions.required and not api:
            sid = opened = sessions.start()
        request.state.sid = sid
        response = await call_next(request)
        if opened:
            sessions.set_cookie(response, opened, request.url.scheme == "https")
        response.headers.update(SECURITY_HEADERS)
        response.headers["server-timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
        return response
