"""A Python client for Photon services: one method per handler, read from the service's OpenAPI.

    c = Client("http://127.0.0.1:8080", token="...")
    c.predict(inputs=[[0.0] * 64])["outputs"]

Retries with exponential backoff (honouring Retry-After) on 503 and on connection errors;
other errors raise `ServiceError` carrying the status and the server's message."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from lepton_ai.errors import LeptonError


class ServiceError(LeptonError):
    """The service answered with an error: `status`, `error` (a short code) and its message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status, self.error = status, error


_NOT_JSON = object()


def _json(r: httpx.Response) -> Any:
    """Return the response's JSON body, or `_NOT_JSON`."""
    try:
        return r.json()
    except ValueError:
        return _NOT_JSON


class Client:
    """Calls a Photon service's handlers as methods, e.g. `client.predict(inputs=[...])`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.url, self.timeout, self.retries, self.backoff = url.rstrip("/"), timeout, retries, backoff
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._spec: dict[str, Any] | None = None

    # -- the service's description -------------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        """Return the service's OpenAPI document (fetched once)."""
        if self._spec is None:
            self._spec = self._request("GET", "/openapi.json")
        return self._spec

    def handlers(self) -> dict[str, str]:
        """Return the service's handlers: name → path."""
        return {
            op["operationId"]: path
            for path, item in self.spec.get("paths", {}).items()
            for method, op in item.items()
            if method == "post" and "operationId" in op
        }

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        paths = self.handlers()
        if name not in paths:
            raise AttributeError(self._no_handler(name, paths))

        def method(**fields: Any) -> Any:
            return self.call(name, **fields)

        method.__name__ = name
        method.__doc__ = self.spec["paths"][paths[name]]["post"].get("summary")
        return method

    def call(self, handler: str, **fields: Any) -> Any:
        """Call `handler` with `fields` as its JSON body; the way to reach one named like a Client method."""
        paths = self.handlers()
        if handler not in paths:
            raise LeptonError(self._no_handler(handler, paths))
        return self._request("POST", paths[handler], json=fields)

    def _no_handler(self, name: str, paths: dict[str, str]) -> str:
        return f"the service at {self.url} has no handler {name!r} (it has: {', '.join(paths)})"

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.handlers()]

    # -- health --------------------------------------------------------------------------

    def ready(self) -> bool:
        """Return whether the service answers /readyz with 200."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the service is ready; raise LeptonError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise LeptonError(f"{self.url} was not ready within {timeout:g} s")
            time.sleep(0.05)

    # -- transport -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self._http.request(method, path, **kwargs)
            except (
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.RemoteProtocolError,
                httpx.ReadError,
            ) as e:
                if last:
                    raise LeptonError(f"cannot reach {self.url}{path}: {e}") from e
                self._sleep(attempt)
                continue
            except httpx.TimeoutException as e:
                # it may still be working on it: asking again would add to its load
                raise LeptonError(f"{self.url}{path} did not answer within {self.timeout:g} s") from e
            if r.status_code == 503 and not last:
                self._sleep(attempt, r.headers.get("retry-after"))
                continue
            if r.status_code >= 400:
                body = _json(r)
                body = body if isinstance(body, dict) else {}
                raise ServiceError(
                    r.status_code, body.get("error", r.reason_phrase), body.get("message", r.text[:200])
                )
            body = _json(r)
            if body is _NOT_JSON:
                raise ServiceError(r.status_code, "not_json", f"the answer is not JSON: {r.text[:200]!r}")
            return body
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        # jitter: retries do not arrive together
        wait = self.backoff * 2**attempt * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            wait = max(wait, min(float(retry_after), 30.0))
        time.sleep(wait)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
