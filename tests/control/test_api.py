"""The control plane's REST API over a real registry: pages and cursors, lineage, metric summaries and
thinned series, JSON errors, the token."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lepton_ai.control import dashboard_app
from lepton_ai.store import Registry
from tests.control.conftest import artifact as _artifact


def test_models_come_in_pages_that_a_cursor_walks(
    api: TestClient, registry: Registry, tmp_path: Path
) -> None:
    for name in ("echo", "alpha", "delta", "bravo", "charlie"):
        registry.register(name, _artifact(tmp_path, name))
    seen, cursor = [], None
    while True:
        body = api.get("/api/v1/models", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [m["name"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert [m["name"] for m in api.get("/api/v1/models?contains=ha").json()["items"]] == ["alpha", "charlie"]
    # the same shape as `lepton models list --json`
    assert api.get("/api/v1/models").json()["items"][0] == registry.list_models()[0].to_dict()


def test_a_version_shows_its_lineage(api: TestClient, registry: Registry, tmp_path: Path) -> None:
    registry.register("digits", _artifact(tmp_path, "v1"), metrics={"accuracy": 0.98})
    registry.register("digits", _artifact(tmp_path, "v2"), parent="digits:1", recipe={"precision": "int8"})
    registry.register("digits", _artifact(tmp_path, "v3"), parent="digits:1")
    listed = api.get("/api/v1/models/digits/versions", params={"limit": 2}).json()
    assert [v["version"] for v in listed["items"]] == [3, 2] and listed["next_cursor"]
    rest = api.get("/api/v1/models/digits/versions", params={"cursor": listed["next_cursor"]}).json()
    assert [v["version"] for v in rest["items"]] == [1] and rest["next_cursor"] is None
    one = api.get("/api/v1/models/digits/versions/1").json()
    assert one["children"] == ["digits:2", "digits:3"] and one["metrics"] == {"accuracy": 0.98}
    two = api.get("/api/v1/models/digits/versions/2").json()
    assert two["parent"] == "digits:1" and two["recipe"] == {"precision": "int8"} and two["children"] == []


def test_runs_show_each_metric_s_min_max_and_last_and_a_thinned_series(
    api: TestClient, registry: Registry
) -> None:
    run = registry.start_run("train", {"lr": 0.1}, name="digits")
    for step in range(1000):
        registry.log_metrics(run.id, {"loss": 9.0 if step == 500 else 1.0 / (step + 1)}, step=step)
    registry.end_run(run.id)
    other = registry.start_run("optimize", {}, name="digits")
    listed = api.get("/api/v1/runs").json()["items"]
    assert (
        [r["id"] for r in listed] == [other.id, run.id]
        and "history" not in listed[1]
        or not listed[1]["history"]
    )
    loss = listed[1]["summary"]["loss"]
    assert loss == {
        "points": 1000,
        "min": pytest.approx(1 / 1000),
        "max": 9.0,
        "last": pytest.approx(1 / 1000),
        "last_step": 999,
    }
    assert [r["id"] for r in api.get("/api/v1/runs?status=running").json()["items"]] == [other.id]
    assert [r["id"] for r in api.get("/api/v1/runs?kind=train").json()["items"]] == [run.id]
    series = api.get(f"/api/v1/runs/{run.id}/metrics", params={"points": 100}).json()["loss"]
    # thinned to 100 points, the spike kept, in step order
    assert len(series) <= 100 and [500, 9.0] in series and series == sorted(series)
    detail = api.get(f"/api/v1/runs/{run.id}").json()
    assert detail["params"] == {"lr": 0.1} and detail["status"] == "completed" and "history" not in detail


@pytest.mark.parametrize(
    "path, status, says",
    [
        ("/api/v1/models/nothing/versions", 404, "unknown model 'nothing'"),
        ("/api/v1/models/digits/versions/7", 404, "no version 7"),
        ("/api/v1/runs/999", 404, "unknown run 999"),
        ("/api/v1/runs/1/metrics?key=recall", 404, "no metric 'recall'"),
        ("/api/v1/models?limit=0", 422, "limit"),
        ("/api/v1/models?cursor=%%%", 422, "is not one this API gave"),
        # well-formed, but another list's (a number for names, a name for ids) or past any row id
        ("/api/v1/models?cursor=MQ", 422, "is not one this API gave"),
        ("/api/v1/runs?cursor=ImEi", 422, "is not one this API gave"),
        ("/api/v1/jobs?cursor=MTE4MDU5MTYyMDcxNzQxMTMwMzQyNA", 422, "is not one this API gave"),
        ("/api/v1/runs/abc", 422, "run_id"),
        ("/api/v1/models/bad%20name/versions", 422, "bad name"),
        ("/api/v1/models/..%2F..%2Fetc/versions", 404, "no such path"),
    ],
)
def test_what_is_not_there_or_malformed_is_a_json_error(
    api: TestClient, registry: Registry, tmp_path: Path, path: str, status: int, says: str
) -> None:
    registry.register("digits", _artifact(tmp_path, "v1"))
    run = registry.start_run("train", {})
    registry.log_metrics(run.id, {"loss": 1.0})
    response = api.get(path)
    assert response.status_code == status and says in response.json()["message"], response.text


def test_a_token_guards_every_path(registry: Registry) -> None:
    api = TestClient(dashboard_app(registry, token="s3cret"))
    assert api.get("/api/v1/models").status_code == 401
    assert api.get("/api/v1/openapi.json").status_code == 401
    assert api.get("/api/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/api/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_api_describes_itself(api: TestClient) -> None:
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/models", "/api/v1/runs", "/api/v1/runs/{run_id}/metrics"} <= set(paths)


def test_jobs_show_their_attempts_and_a_log_to_follow(api: TestClient) -> None:
    from lepton_ai.jobs.queue import JobQueue
    from lepton_ai.jobs.spec import parse
    from lepton_ai.jobs.worker import log_key
    from lepton_ai.store.artifacts import ArtifactStore

    queue = JobQueue()
    jobs = [
        queue.submit(parse({"kind": "command", "name": f"j{i}", "spec": {"argv": ["true"]}}))
        for i in range(3)
    ]
    listed = api.get("/api/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in listed["items"]] == [jobs[2].id, jobs[1].id] and listed["next_cursor"]
    running = queue.claim(jobs[0].id, "host:1")
    assert running is not None
    # where the local worker writes an attempt's log
    log = Path(ArtifactStore().path(log_key(jobs[0].id, 1)))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("epoch 1\n")
    first = api.get(f"/api/v1/jobs/{jobs[0].id}/log").json()
    assert first == {"text": "epoch 1\n", "offset": 8, "done": False}
    log.write_text("epoch 1\nepoch 2\n")
    # from where the last read stopped: only what was written since
    assert api.get(f"/api/v1/jobs/{jobs[0].id}/log", params={"offset": 8}).json()["text"] == "epoch 2\n"
    detail = api.get(f"/api/v1/jobs/{jobs[0].id}").json()
    assert detail["state"] == "running" and [a["worker"] for a in detail["attempts"]] == ["host:1"]
    assert api.get("/api/v1/jobs?state=exploded").status_code == 422
    assert api.get("/api/v1/jobs/999").status_code == 404
