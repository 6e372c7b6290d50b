"""The API docs of a service: FastAPI's OpenAPI document, with one POST operation per handler described
from its type hints (request body, response, the errors it can answer, its batching)."""

from __future__ import annotations

import inspect
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
_ERROR_CODES = ("400", "401", "413", "422", "503", "504")


class HandlerDocs(FastAPI):
    """A FastAPI app whose OpenAPI document also describes the handlers, which are answered outside its
    routing (their routes here exist for the docs)."""

    def __init__(
        self, handlers: dict[str, Handler], models: dict[str, type[BaseModel]], bearer: bool, **options: Any
    ) -> None:
        super().__init__(**options)
        self.handlers, self.models, self.bearer = handlers, models, bearer

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

        def ref(tp: Any, fallback: str) -> dict[str, Any]:
            s = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
            components.update(s.pop("$defs", {}))
            title = s.get("title", fallback)
            components[title] = s
            return {"$ref": f"#/components/schemas/{title}"}

        doc = (inspect.getdoc(h.fn) or "").split("\n")[0]
        response = {"application/json": {"schema": ref(h.response_schema(), f"{name}_response")}}
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
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref(self.models[name], name)}},
            },
            "responses": {
                "200": {"description": "success", "content": response},
                **dict.fromkeys(_ERROR_CODES, _ERROR),
            },
            "x-lepton-batch": batching if h.batched else None,
        }
        if self.bearer:
            op["security"] = [{"bearer": []}]
        return op
