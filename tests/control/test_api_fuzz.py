"""The dashboard's REST API fuzzed from its own OpenAPI (schemathesis): whatever a client sends that the
schema allows, the answer is no 5xx and matches what the schema documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from lepton_ai.control import dashboard_app
from lepton_ai.jobs.queue import JobQueue
from lepton_ai.jobs.spec import parse
from lepton_ai.store import Registry, Services
from tests.control.conftest import artifact


@pytest.fixture
def api_schema(registry: Registry, tmp_path: Path) -> schemathesis.schemas.BaseSchema:
    registry.register("digits", artifact(tmp_path, "v1"), metrics={"accuracy": 0.9})
    registry.register("digits", artifact(tmp_path, "v2"), parent="digits:1", recipe={"precision": "int8"})
    run = registry.start_run("train", {"lr": 0.1})
    for step in range(5):
        registry.log_metrics(run.id, {"loss": 1.0 / (step + 1)}, step=step)
    JobQueue().submit(parse({"kind": "command", "name": "echo", "spec": {"argv": ["true"]}}))
    Services().record("serve", "gone", "http://127.0.0.1:9", pid=1)
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", dashboard_app(registry))


def test_the_api_answers_what_it_documents(api_schema: schemathesis.schemas.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers(case: schemathesis.Case) -> None:
            # a cursor is opaque: the schema can say it is a string, not which strings this API gave
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        answers()
