"""`lepton dashboard`: the control plane's pages and REST API over this machine's registry."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from lepton_ai.cli.output import console
from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import is_loopback_host


def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LEPTON_TOKEN",
            show_default=False,
            help="Require `Authorization: Bearer TOKEN` (prefer LEPTON_TOKEN: command lines are visible).",
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Listen beyond loopback without a token all the same.")
    ] = False,
    price_per_hour: Annotated[
        float | None,
        typer.Option(min=0.0, help="Hourly price in USD for the cost cards.", show_default=False),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option(
            help="Price the cost cards at this instance's (`lepton models instances`).", show_default=False
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show everything, change nothing (no cancel, retry, verify).")
    ] = False,
) -> None:
    """Serve the dashboard and the REST API under /api/v1 (OpenAPI at /api/v1/openapi.json) over the registry
    the CLI uses."""
    import uvicorn

    from lepton_ai.control import dashboard_app
    from lepton_ai.store import Registry
    from lepton_ai.store.cost import price

    if not token and not insecure and not is_loopback_host(host):
        raise InvalidInputError(
            f"--host {host} lets other machines in: give a token (LEPTON_TOKEN or --token), or --insecure"
        )
    registry = Registry()
    # an unreadable registry fails here, in one line, not on the first request
    registry.list_models(limit=1)
    app = dashboard_app(registry, token, read_only, price(price_per_hour, instance))
    sock = _bind(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}"
    console.print(f"[green]✓[/] dashboard on {url}/ (API: {url}/api/v1, OpenAPI: {url}/api/v1/openapi.json)")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """Listen on `host`:`port` before uvicorn starts, so the URL printed has the port actually bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    return sock
