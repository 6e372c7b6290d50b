"""`Photon`: a Python class whose `@handler` methods become typed HTTP endpoints.

    class Classifier(Photon):
        # once per worker, before readiness
        def init(self):
            self.model = LeptonModel.load("digits-cnn")
        @handler(max_batch_size=64, max_wait_ms=5)
        def predict(self, inputs: list[list[float]]) -> list[int]:
            return self.model.predict(inputs).tolist()

A batched handler's first parameter is the list of examples: requests that arrive together
are joined into one call and its outputs split back, in order. Its other parameters are
per-request options (requests with different options are not mixed). A handler without
`max_batch_size` is called once per request with the request's fields."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from lepton_ai.errors import InvalidInputError


@dataclass
class Handler:
    """A Photon method served over HTTP, with its batching options."""

    fn: Callable[..., Any]
    max_batch_size: int | None = None
    max_wait_ms: float = 5.0
    timeout_s: float | None = None
    prepare_fn: Callable[..., Any] | None = None
    # calls running at once, each on its own thread (for code that releases the GIL)
    concurrency: int = 1
    # the response's key for a batched handler's list of outputs
    answers: str = "outputs"

    @property
    def name(self) -> str:
        """Return the handler's name, which is also its route (`POST /name`)."""
        return self.fn.__name__

    @property
    def batched(self) -> bool:
        """Return whether this is a batch handler (a list of examples in, a list of outputs out)."""
        return self.max_batch_size is not None

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        return self if obj is None else types.MethodType(self.fn, obj)

    def prepare(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a method that checks and converts one request's fields before it is queued
        (`def check(self, **fields) -> fields`); a ValueError it raises answers 422 to that request alone. It
        runs on the event loop (off it for large bodies): for heavy work (decoding images) it returns an
        awaitable of the fields instead, which does that work elsewhere, within the request's deadline."""
        self.prepare_fn = fn
        return fn

    def request_model(self, owner: type) -> type[BaseModel]:
        """Return the pydantic model of this handler's request body, built from the type hints."""
        hints = typing.get_type_hints(self.fn, include_extras=True)
        fields: dict[str, Any] = {}
        for p in list(inspect.signature(self.fn).parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise InvalidInputError(f"{owner.__name__}.{self.name}: *args/**kwargs cannot be HTTP fields")
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (hints.get(p.name, Any), default)
        if self.batched and (not fields or typing.get_origin(next(iter(fields.values()))[0]) is not list):
            raise InvalidInputError(
                f"{owner.__name__}.{self.name}: a batched handler's first parameter must be "
                "annotated as a list of examples, e.g. inputs: list[list[float]]"
            )
        config = ConfigDict(extra="forbid", allow_inf_nan=False)
        return create_model(f"{_camel(self.name)}Request", __config__=config, **fields)

    def response_schema(self) -> Any:
        """Return the pydantic type of the response body."""
        returns = typing.get_type_hints(self.fn).get("return", Any)
        if self.batched:
            fields: dict[str, Any] = {self.answers: (returns, ...)}
            return create_model(f"{_camel(self.name)}Response", **fields)
        return returns

    @functools.cached_property
    def batch_field(self) -> str | None:
        """Return the name of the parameter that carries the examples (batched handlers)."""
        params = list(inspect.signature(self.fn).parameters)[1:]
        return params[0] if self.batched and params else None


def handler(
    fn: Callable[..., Any] | None = None,
    *,
    max_batch_size: int | None = None,
    max_wait_ms: float = 5.0,
    timeout_s: float | None = None,
    concurrency: int = 1,
    answers: str = "outputs",
) -> Any:
    """Mark a Photon method as an HTTP handler (`@handler` or `@handler(max_batch_size=64, max_wait_ms=5)`;
    `concurrency=N` runs up to N calls at once, each on its own thread: for models that release the GIL,
    such as ONNX Runtime with one compute thread per call; a batched handler answers `{answers: [...]}`)."""
    if max_batch_size is not None and max_batch_size < 1:
        raise InvalidInputError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if concurrency < 1:
        raise InvalidInputError(f"concurrency must be at least 1, got {concurrency}")

    def wrap(f: Callable[..., Any]) -> Handler:
        return Handler(f, max_batch_size, max_wait_ms, timeout_s, concurrency=concurrency, answers=answers)

    return wrap(fn) if fn is not None else wrap


class Photon:
    """A service: `init` runs once per worker before it is ready; `@handler` methods are its endpoints.

    With `model_process = True`, `lepton serve` runs `init` and the handlers in a process of their own,
    built from the same target (see `serve.process`): for eager PyTorch, whose Python would share the GIL
    with the HTTP side. `prepare` methods still run in the server process, where `init` has not run."""

    model_process: bool = False

    def init(self) -> None:
        """Load models and anything slow; runs once per worker before the worker reports ready."""

    def describe(self) -> tuple[str, str]:
        """Return the title and description of the service's API docs: the class's name and the first
        paragraph of its own docstring (not one inherited from `Photon`)."""
        return type(self).__name__, inspect.cleandoc(type(self).__doc__ or "").split("\n\n")[0]

    def example_schema(self, name: str) -> dict[str, Any] | None:
        """Return the JSON schema of one example of batched handler `name`, for its API docs, where it is
        narrower than the type hints say (a model's input shape); None: as the type hints say."""
        return None

    @classmethod
    def handlers(cls) -> dict[str, Handler]:
        """Return this class's handlers by name."""
        found: dict[str, Handler] = {}
        for klass in reversed(cls.__mro__):
            found.update({k: v for k, v in vars(klass).items() if isinstance(v, Handler)})
        return found


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
