"""A Ray cluster as every layer reaches it: its address checked before connecting (ray.init would retry an
unreachable one for minutes), a driver connection for the length of a block, and Ray's errors in one line."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

from lepton_ai.errors import InvalidInputError


def ray_address(address: str | None) -> str:
    """Return the cluster's address, from the argument or RAY_ADDRESS, once it answers: we never start a
    cluster."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise InvalidInputError(
            "no Ray cluster: pass --address HEAD:6379 (or 'auto' on a cluster node) or set "
            "RAY_ADDRESS; start one with `ray start --head`"
        )
    if address.startswith(("http://", "https://")):
        raise InvalidInputError(f"{address} is a dashboard URL: give the cluster's address, HEAD:6379")
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not port.isdigit():
            raise InvalidInputError(
                f"the Ray address is HOST:PORT (e.g. 127.0.0.1:6379) or 'auto', got {address!r}"
            )
        # ray.init would retry an unreachable address for minutes
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
        except OSError as e:
            raise InvalidInputError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None
    return address


@contextlib.contextmanager
def ray_connected(address: str) -> Iterator[None]:
    """Connect this process to the cluster as a Ray driver (unless it already is one), and disconnect at
    the end."""
    try:
        import ray
    except ImportError:
        raise InvalidInputError("Ray is not installed: pip install 'lepton-ai[ray]'") from None
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = (
            ""
            if os.environ.get("RAY_AUTH_MODE") == "token"
            else (
                " (a cluster with token authentication also needs RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN)"
            )
        )
        raise InvalidInputError(
            f"cannot connect to the Ray cluster at {address}: {last_line(e)}{hint}"
        ) from None
    try:
        yield
    finally:
        # Serve and its applications are detached: they stay
        ray.shutdown()


def last_line(e: BaseException | str) -> str:
    """Return the last non-empty line of an error (where Ray's tracebacks name the cause)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]
