"""The dashboard's REST API fuzzed from its own OpenAPI (schemathesis): whatever a client sends that the
schema allows, the answer is no 5xx and matches what the schema documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from lepton_ai.control import dashboard_app
from lepton_ai.data.ingest import add
from lepton_ai.jobs.queue import JobQueue
from lepton_ai.jobs.spec import parse
from lepton_ai.store import Registry, Services
from tests.control.conftest import artifact, dataset
from tests.data.conftest import write_digits


@pytest.fixture
def api_schema(registry: Registry, tmp_path: Path) -> schemathesis.schemas.BaseSchema:
    registry.register("digits", artifact(tmp_path, "v1"), metrics={"accuracy": 0.9})
    registry.register("digits", artifact(tmp_path, "v2"), parent="digits:1", recipe={"precision": "int8"})
    run = registry.start_run("train", {"lr": 0.1})
    for step in range(5):
        registry.log_metrics(run.id, {"loss": 1.0 / (step + 1)}, step=step)
    JobQueue().submit(parse({"kind": "command", "name": "echo", "spec": {"argv": ["true"]}}))
    Services().record("serve", "gone", "http://127.0.0.1:9", pid=1)
    # a dataset added from real files (one left out), a model trained on it, and one registered by hand
    folder = write_digits(tmp_path / "images", 20)
    (folder / "3" / "broken.png").write_bytes(b"not a png")
    registry.register("digits", artifact(tmp_path, "v3"), dataset=add("images", str(folder)).ref)
    dataset(tmp_path, "wine", source="s3://bucket/<wine>.csv")
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", dashboard_app(registry))


def test_the_api_answers_what_it_documents(api_schema: schemathesis.schemas.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers(case: schemathesis.Case) -> None:
            # a cursor is opaque: the schema can say it is a string, not which strings this API gave
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        answers()


def test_the_datasets_known_answer_what_they_document(api_schema: schemathesis.schemas.BaseSchema) -> None:
    # a fuzzer seldom guesses a name that is there: the answers with data are checked against the schema too
    for path, params in (
        ("/api/v1/datasets", {}),
        ("/api/v1/datasets/{name}", {"name": "images"}),
        ("/api/v1/datasets/{name}/{version}", {"name": "images", "version": 1}),
        ("/api/v1/datasets/{name}/{version}", {"name": "wine", "version": 1}),
    ):
        case = api_schema[path]["GET"].Case(path_parameters=params)
        assert case.call_and_validate().status_code == 200, (path, params)
