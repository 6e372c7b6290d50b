"""`lepton dashboard`: the control plane's REST API (and, to come, its pages) over this machine's registry."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from lepton_ai.cli.output import console
from lepton_ai.errors import InvalidInputError


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
) -> None:
    """Serve the REST API under /api/v1 (OpenAPI at /api/v1/openapi.json) over the registry the CLI uses."""
    import uvicorn

    from lepton_ai.control import api_app
    from lepton_ai.store import Registry

    if not token and not insecure and not _loopback(host):
        raise InvalidInputError(
            f"--host {host} lets other machines in: give a token (LEPTON_TOKEN or --token), or --insecure"
        )
    registry = Registry()
    # an unreadable registry fails here, in one line, not on the first request
    registry.list_models(limit=1)
    console.print(f"[green]✓[/] control plane on http://{host}:{port}/api/v1 (docs: /api/v1/docs)")
    uvicorn.run(api_app(registry, token), host=host, port=port, log_level="warning")


def _loopback(host: str) -> bool:
    """Return whether `host` is this machine alone (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
