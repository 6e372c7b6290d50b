"""Services fuzzed from their own OpenAPI (schemathesis): whatever a client sends that the docs allow, the
answer is no 5xx and is what the docs say, most such requests are answered 200 (the docs describe the real
inputs), and the service is healthy afterwards."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from lepton_ai.serve import Photon, handler
from lepton_ai.serve.model import model_photon


class Kinds(Photon):
    """One handler of each kind: batched with an option, one call per request, async, with a prepare step."""

    @handler(max_batch_size=8, max_wait_ms=1)
    def scale(self, inputs: list[float], factor: float = 2.0) -> list[float]:
        """Multiply each number."""
        return [x * factor for x in inputs]

    @handler
    def greet(self, name: str, times: int = 1) -> dict[str, str]:
        """Greet."""
        return {"greeting": " ".join([f"hello {name}"] * max(0, min(times, 3)))}

    @handler
    async def ping(self) -> str:
        """Answer on the event loop."""
        await asyncio.sleep(0)
        return "pong"

    @handler(max_batch_size=4)
    def lengths(self, inputs: list[str]) -> list[int]:
        """Count characters."""
        return [len(s) for s in inputs]

    @lengths.prepare
    def _lengths(self, inputs: list[str]) -> dict[str, list[str]]:
        return {"inputs": [s.strip() for s in inputs]}


class Answer(NamedTuple):
    body: Any
    status: int
    message: str


def fuzz(url: str, examples: int) -> dict[str, list[Answer]]:
    """Send `examples` schema-generated requests to each operation of the service at `url`, checking each
    answer against the docs; return the answers by operation."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    answered: dict[str, list[Answer]] = {}
    for operation in [result.ok() for result in schema.get_all_operations()]:
        answered[operation.path] = []

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            # the same requests every run: a pass or a failure that does not depend on the draw
            derandomize=True,
        )
        def answers(case: schemathesis.Case) -> None:
            # counted below instead: a schema cannot say which base64 strings are images
            response = case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=30)
            message = response.json().get("message", "") if response.status_code >= 400 else ""
            answered[case.operation.path].append(Answer(case.body, response.status_code, message))

        answers()
    assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
    return answered


def accepted(answers: list[Answer]) -> float:
    return sum(a.status == 200 for a in answers) / len(answers)


def test_a_photon_with_every_kind_of_handler_answers_what_it_documents(serve) -> None:
    with serve(Kinds()) as url:
        answered = fuzz(url, 40)
    assert {"/scale", "/greet", "/ping", "/lengths", "/healthz", "/readyz", "/metrics"} <= set(answered)
    for path in ("/scale", "/greet", "/ping", "/lengths"):
        assert accepted(answered[path]) > 0.8, (path, answered[path])


def test_a_registered_model_answers_what_it_documents(serve, digits_ref: str) -> None:
    with serve(model_photon(digits_ref)) as url:
        answered = fuzz(url, 60)
        predict = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]["PredictRequest"]
    examples = predict["properties"]["inputs"]
    assert examples["minItems"] == 1 and examples["maxItems"] == 4096
    # explanations: answered, or refused by name (a method, target or step count out of bounds)
    assert answered["/explain"] and all(a.status in (200, 422) for a in answered["/explain"])
    assert any(a.status == 200 for a in answered["/explain"])
    assert all(a.message for a in answered["/explain"] if a.status == 422)
    # 64 numbers flat, 1×8×8 nested, or an image
    assert [form["type"] for form in examples["items"]["anyOf"]] == ["array", "array", "string"]
    # every example of numbers is taken; a string that is not an image is refused, naming it
    for answer in answered["/predict"]:
        images = any(isinstance(x, str) for x in answer.body["inputs"])
        assert answer.status == 200 or (images and "not a base64-encoded image" in answer.message), answer
    assert sum(a.status == 200 for a in answered["/predict"]) >= 3


@pytest.mark.parametrize("path", ["/metrics"])
def test_metrics_are_documented_as_the_text_they_are(serve, path: str) -> None:
    with serve(Kinds()) as url:
        documented = httpx.get(f"{url}/openapi.json").json()["paths"][path]["get"]["responses"]["200"]
        answered = httpx.get(url + path).headers["content-type"]
    assert list(documented["content"]) == ["text/plain"] and answered.startswith("text/plain")
