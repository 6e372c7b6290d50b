"""The API docs of a service: FastAPI's OpenAPI document, with one POST operation per handler described
from its type hints (request body, response, the errors it can answer, its batching)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter

from lepton_ai.serve.photon import Handler

# The answer of every error: {"error": code, "message": what was wrong}.
_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
            }
        }
    },
}
_ERROR_CODES = ("400", "401", "408", "413", "422", "503", "504")


@dataclass(frozen=True)
class Examples:
    """What the docs say of a batched handler's examples: how many one request may carry and, by handler,
    the JSON schema of one example where it is narrower than the type hints."""

    max_per_request: int
    schemas: dict[str, dict[str, Any]]


class HandlerDocs(FastAPI):
    """A FastAPI app whose OpenAPI document also describes the handlers, which are answered outside its
    routing (their routes here exist for the docs)."""

    def __init__(
        self,
        handlers: dict[str, Handler],
        models: dict[str, type[BaseModel]],
        bearer: bool,
        examples: Examples,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.handlers, self.models, self.bearer, self.examples = handlers, models, bearer, examples

    def openapi(self) -> dict[str, Any]:
        """Return the OpenAPI document (built once): FastAPI's routes, then an operation per handler."""
        if self.openapi_schema:
            return self.openapi_schema
        schema = get_openapi(
            title=self.title, version=self.version, description=self.description, routes=self.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if self.bearer:
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for name, h in self.handlers.items():
            schema.setdefault("paths", {})[f"/{name}"] = {"post": self._operation(name, h, components)}
        self.openapi_schema = schema
        return schema

    def _operation(self, name: str, h: Handler, components: dict[str, Any]) -> dict[str, Any]:
        """Return the POST operation of handler `name`, adding the schemas it refers to to `components`."""

        def ref(tp: Any, fallback: str, answer: bool = False) -> dict[str, Any]:
            s = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
            if answer:
                # what the request's schemas share with it stays as the request has it
                s["$defs"] = {k: v for k, v in s.get("$defs", {}).items() if k not in components}
                s = _nullable_numbers(s)
            components.update(s.pop("$defs", {}))
            title = s.get("title", fallback)
            components[title] = s
            return {"$ref": f"#/components/schemas/{title}"}

        body = ref(self.models[name], name)
        if h.batch_field:
            self._describe_examples(name, h.batch_field, components[body["$ref"].rsplit("/", 1)[-1]])
        doc = (inspect.getdoc(h.fn) or "").split("\n")[0]
        response = {"application/json": {"schema": ref(h.response_schema(), f"{name}_response", answer=True)}}
        batching = {
            "field": h.batch_field,
            "max_batch_size": h.max_batch_size,
            "max_wait_ms": h.max_wait_ms,
            "concurrency": h.concurrency,
        }
        op: dict[str, Any] = {
            "operationId": name,
            "summary": doc or name,
            "tags": ["handlers"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {"description": "success", "content": response},
                **dict.fromkeys(_ERROR_CODES, _ERROR),
            },
            "x-lepton-batch": batching if h.batched else None,
        }
        if self.bearer:
            op["security"] = [{"bearer": []}]
        return op

    def _describe_examples(self, name: str, field: str, request: dict[str, Any]) -> None:
        """Say in the request's schema how many examples one request takes and, where the Photon says it,
        what one example is: what the server accepts, not only what its type hints allow."""
        examples = request["properties"][field]
        examples.update(minItems=1, maxItems=self.examples.max_per_request)
        one = self.examples.schemas.get(name)
        if one is not None:
            examples["items"] = one


def _nullable_numbers(schema: Any) -> Any:
    """Return `schema` with every number also allowed to be null: a NaN or infinite float is answered as null
    (JSON has neither)."""
    if isinstance(schema, list):
        return [_nullable_numbers(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable_numbers(v) for k, v in schema.items()}
    if out.get("type") == "number":
        out["type"] = ["number", "null"]
    return out
