"""A service's answers: JSON bodies (orjson where it can) and the errors, each a status, a short code and a
message naming the problem."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.responses import Response

from lepton_ai.serve.batching import HandlerQueue


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


def queue_full(batcher: HandlerQueue) -> HTTPError:
    return HTTPError(
        503,
        "overloaded",
        f"queue full ({batcher.max_queue} requests waiting); retry later",
        {"Retry-After": str(batcher.retry_after())},
    )


def first_error(e: ValidationError) -> HTTPError:
    err = e.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return HTTPError(400, "malformed_json", f"the body is not valid JSON: {err['msg']}")
    where = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return HTTPError(422, "invalid_input", f"{where}: {err['msg']}{more}")
