"""The Kubernetes path, offline: rendered manifests are compared byte for byte with the golden files in
tests/deploy/golden/ and validated against the official Kubernetes schemas (kubernetes-validate, strict);
`lepton deploy --target kubernetes` and the job backend talk to a fake API server on loopback.

After an intended change to the manifests, regenerate the golden files and review their diff:

    LEPTON_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/deploy/test_kubernetes.py
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from lepton_ai.deploy.kubernetes import (
    KubernetesBackend,
    job_manifests,
    object_name,
    service_manifests,
    to_yaml,
    validate,
)
from lepton_ai.errors import InvalidInputError
from lepton_ai.jobs.spec import parse

GOLDEN = Path(__file__).parent / "golden"
IMAGE = "ghcr.io/example/lepton:0.1.0"


def train_spec(**over: Any) -> Any:
    doc = {
        "kind": "train",
        "name": "digits-nightly",
        "resources": {"cpus": 2, "memory": "4Gi"},
        "retries": 2,
        "spec": {"model": "cnn-small", "data": "digits", "epochs": 10, "name": "digits-cnn"},
    }
    for key, value in over.items():
        (doc["spec"] if key in ("nproc", "nnodes") else doc)[key] = value
    return parse(doc)


CASES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "service-autoscale-secret": lambda: service_manifests(
        "digits-cnn:1",
        replicas=3,
        image=IMAGE,
        autoscale=(2, 6),
        store_secret="lepton-store",
        token_secret="lepton-token",
        serve_args=["--max-batch-size", "32"],
    ),
    "service-pvc-gpu": lambda: service_manifests(
        "digits-cnn:2",
        replicas=2,
        image=IMAGE,
        namespace="ml",
        cpus=4,
        memory="16Gi",
        gpus=1,
        store_pvc="lepton-home",
        serve_args=["--device", "cuda"],
    ),
    "job-train": lambda: job_manifests(train_spec(), job_id=12, image=IMAGE, store_pvc="lepton-home"),
    "pytorchjob-2-nodes": lambda: job_manifests(
        train_spec(nproc=2, nnodes=2, resources={"cpus": 8, "gpus": 2, "memory": "32Gi"}),
        job_id=13,
        image=IMAGE,
        namespace="ml",
        store_secret="lepton-store",
    ),
}


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def container(pod_template: dict[str, Any]) -> dict[str, Any]:
    return pod_template["spec"]["containers"][0]


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_manifests_match_the_golden_files(case: str) -> None:
    text, golden = to_yaml(CASES[case]()), GOLDEN / f"{case}.yaml"
    if os.environ.get("LEPTON_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no {golden}: run with LEPTON_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{case} differs from {golden} (LEPTON_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_manifests_pass_the_official_schemas(case: str) -> None:
    docs = list(yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()))
    # what is applied is what the golden file shows
    assert docs == CASES[case]()
    validate(docs)
    validate(docs, kubernetes_version="1.35")


def test_service_manifests() -> None:
    m = by_kind(CASES["service-autoscale-secret"]())
    assert set(m) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    assert {d["metadata"]["name"] for d in m.values()} == {"lepton-digits-cnn-1"}
    deployment, pod = m["Deployment"], m["Deployment"]["spec"]["template"]
    # the HPA owns the count
    assert "replicas" not in deployment["spec"]
    c = container(pod)
    assert c["command"] == [
        "lepton",
        "serve",
        "digits-cnn:1",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--max-batch-size",
        "32",
    ]
    assert (
        c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    )
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300
    assert {
        "name": "LEPTON_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "lepton-token", "key": "token"}},
    } in c["env"]
    # never inline
    assert not any("value" in e and "TOKEN" in e["name"] for e in c["env"])
    assert c["envFrom"] == [{"secretRef": {"name": "lepton-store"}}]
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["spec"]["securityContext"]["runAsNonRoot"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    # ≥ the server's drain after SIGTERM
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 35
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert m["Service"]["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    hpa = m["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"], hpa["scaleTargetRef"]["name"]) == (
        2,
        6,
        "lepton-digits-cnn-1",
    )


def test_service_with_a_pvc_reads_it_read_only_and_copies_the_registry() -> None:
    deployment = by_kind(CASES["service-pvc-gpu"]())["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2 and deployment["metadata"]["namespace"] == "ml"
    c = container(deployment["spec"]["template"])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["command"][-2:] == ["--device", "cuda"]
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)["persistentVolumeClaim"]
    assert claim == {"claimName": "lepton-home", "readOnly": True}
    assert {"name": "LEPTON_ARTIFACTS", "value": "/mnt/lepton-store/artifacts"} in c["env"]
    assert pod["initContainers"][0]["command"][-1].startswith("cp /mnt/lepton-store/registry.db")


def test_job_and_pytorchjob() -> None:
    job = by_kind(CASES["job-train"]())["Job"]
    pod = job["spec"]["template"]
    assert job["spec"]["backoffLimit"] == 2 and pod["spec"]["restartPolicy"] == "Never"
    assert (
        job["spec"]["ttlSecondsAfterFinished"] > 0 and pod["metadata"]["labels"]["lepton.ai/job-id"] == "12"
    )
    c = container(pod)
    assert c["command"][:2] == ["lepton", "train"] and c["command"][-3:] == [
        "--checkpoint-dir",
        "/var/lib/lepton/checkpoints/job-12",
        "--resume",
    ]
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    ptj = by_kind(CASES["pytorchjob-2-nodes"]())["PyTorchJob"]["spec"]
    assert ptj["nprocPerNode"] == "2" and ptj["runPolicy"]["backoffLimit"] == 2
    roles = ptj["pytorchReplicaSpecs"]
    assert (roles["Master"]["replicas"], roles["Worker"]["replicas"]) == (1, 1)
    c = container(roles["Worker"]["template"])
    assert c["name"] == "pytorch" and c["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
    argv = " ".join(c["command"])
    assert (
        "--nproc 2" in argv and "--nnodes 2 --rdzv $(MASTER_ADDR):$(MASTER_PORT) --node-rank $(RANK)" in argv
    )
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    one_node = job_manifests(train_spec(nproc=2), job_id=1, image=IMAGE, store_secret="s")
    # one machine: torchrun inside a plain Job
    assert [d["kind"] for d in one_node] == ["Job"]


def test_command_jobs_keep_their_argv_and_env() -> None:
    spec = parse(
        {
            "kind": "command",
            "name": "hello",
            "spec": {"argv": ["python", "-c", "print(1)"], "env": {"A": "1"}},
        }
    )
    c = container(job_manifests(spec, job_id=3, image=IMAGE, store_secret="s")[0]["spec"]["template"])
    assert c["command"] == ["python", "-c", "print(1)"] and {"name": "A", "value": "1"} in c["env"]


def test_names_are_dns_1123() -> None:
    assert object_name("lepton", "digits-cnn:2") == "lepton-digits-cnn-2"
    rewritten = {
        object_name("lepton", r) for r in ("Digits_CNN:latest", "digits_cnn:latest", "digits.cnn:latest")
    }
    assert len(rewritten) == 3 and all(n.startswith("lepton-digits-cnn-latest-") for n in rewritten)
    # never the name `digits-cnn:latest` gets
    assert "lepton-digits-cnn-latest" not in rewritten
    long = object_name("lepton", "a" * 80 + ":3")
    assert len(long) <= 52 and long != object_name("lepton", "a" * 80 + ":4")
    with pytest.raises(InvalidInputError):
        object_name("::")
    for bad in ({"ref": ""}, {"ref": ":::"}, {"namespace": "Bad_NS"}, {"store_secret": "Bad Secret"}):
        args = {"ref": "digits:1", "replicas": 1, "image": "img", "store_secret": "s", **bad}
        with pytest.raises(InvalidInputError):
            service_manifests(**args)


def test_store_and_image_are_required() -> None:
    for stores in ({}, {"store_pvc": "p", "store_secret": "s"}):
        with pytest.raises(InvalidInputError, match="exactly one of --store-pvc"):
            service_manifests("m:1", replicas=1, image=IMAGE, **stores)
    with pytest.raises(InvalidInputError, match="image"):
        service_manifests("m:1", replicas=1, image="", store_secret="s")
    with pytest.raises(InvalidInputError, match="LEPTON_IMAGE"):
        job_manifests(train_spec(), job_id=1, image="", store_secret="s")
    with pytest.raises(InvalidInputError, match="--memory"):
        service_manifests("m:1", replicas=1, image=IMAGE, memory="lots", store_secret="s")
    with pytest.raises(InvalidInputError, match="MIN <= MAX"):
        service_manifests("m:1", replicas=1, image=IMAGE, autoscale=(5, 2), store_secret="s")


# -- validation refuses what a cluster would refuse -----------------------------------------------


def broken(case: str, change: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    docs = copy.deepcopy(CASES[case]())
    change(docs)
    return docs


SERVER = lambda d: d[0]["spec"]["template"]["spec"]["containers"][0]  # noqa: E731
WORKER = lambda d: d[0]["spec"]["pytorchReplicaSpecs"]["Worker"]  # noqa: E731


@pytest.mark.parametrize(
    "case, change, says",
    [
        (
            "service-pvc-gpu",
            lambda d: d[0]["spec"].update(replicaz=3),
            "Deployment/lepton-digits-cnn-2: spec.replicaz: unknown field",
        ),
        (
            "service-pvc-gpu",
            lambda d: d[0]["spec"].update(replicas="3"),
            "Deployment/lepton-digits-cnn-2: spec.replicas: '3' is not of type 'integer'",
        ),
        (
            "service-pvc-gpu",
            lambda d: SERVER(d).update(imagePullPolicy=["x"]),
            "spec.template.spec.containers[0].imagePullPolicy",
        ),
        (
            "service-autoscale-secret",
            lambda d: d[2]["spec"].update(minReplicas="two"),
            "HorizontalPodAutoscaler/lepton-digits-cnn-1: spec.minReplicas",
        ),
        (
            "service-autoscale-secret",
            lambda d: d[1]["metadata"].update(name="Lepton_Digits"),
            "Service/Lepton_Digits: metadata.name",
        ),
        (
            "job-train",
            lambda d: d[0]["spec"]["template"]["spec"].update(restartPolicy=7),
            "Job/lepton-digits-nightly-12: spec.template.spec.restartPolicy",
        ),
        (
            "pytorchjob-2-nodes",
            lambda d: WORKER(d)["template"]["spec"]["containers"][0].update(resourcez={}),
            "PyTorchJob/lepton-digits-nightly-13: spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].resourcez: "
            "unknown field",
        ),
        (
            "pytorchjob-2-nodes",
            lambda d: d[0]["spec"]["pytorchReplicaSpecs"].pop("Master"),
            "needs exactly one Master",
        ),
        (
            "pytorchjob-2-nodes",
            lambda d: d[0]["spec"].update(nprocPerNode=2),
            "spec.nprocPerNode: must be a string",
        ),
        ("pytorchjob-2-nodes", lambda d: WORKER(d).update(replicas="1"), "Worker.replicas"),
    ],
)
def test_validate_names_the_manifest_and_the_field(case: str, change: Any, says: str) -> None:
    docs = broken(case, change)
    with pytest.raises(InvalidInputError) as e:
        validate(docs)
    assert says in str(e.value) and "\n" not in str(e.value)


# -- the CLI ------------------------------------------------------------------------------------


def lepton(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


DEPLOY = (
    "deploy",
    "digits-cnn:1",
    "--target",
    "kubernetes",
    "--replicas",
    "3",
    "--autoscale",
    "2,6",
    "--image",
    "ghcr.io/x/lepton:0.1",
    "--store-secret",
    "lepton-store",
)


def test_deploy_dry_run_prints_valid_manifests() -> None:
    r = lepton(*DEPLOY, "--dry-run", "-o", "yaml")
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    validate(docs)
    listed = json.loads(lepton(*DEPLOY, "--dry-run", "-o", "json").stdout)
    assert listed["kind"] == "List" and listed["items"] == docs


@pytest.mark.parametrize("bad", ["3", "5,2", "a,b", "0,2"])
def test_deploy_bad_autoscale_is_a_one_line_error(bad: str) -> None:
    r = lepton(
        "deploy",
        "m:1",
        "--target",
        "kubernetes",
        "--autoscale",
        bad,
        "--image",
        "x",
        "--store-secret",
        "s",
        "--dry-run",
    )
    assert r.returncode == 2 and "--autoscale" in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
        r.stderr
    )


def test_deploy_without_a_usable_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    r = lepton(*DEPLOY, env={"KUBECONFIG": str(tmp_path / "missing")})
    assert r.returncode == 2 and "no kubeconfig at" in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
        r.stderr
    )
    # a port nothing listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = s.getsockname()[1]
    r = lepton(*DEPLOY, env={"KUBECONFIG": str(kubeconfig(tmp_path, f"http://127.0.0.1:{nobody}"))})
    assert r.returncode == 2 and "cannot reach the Kubernetes API" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- against a fake API server --------------------------------------------------------------------


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
            }
        )
    )
    return path


class FakeAPI(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API: server-side apply, get, delete, pods and their logs."""

    objects: dict[str, dict[str, Any]] = {}
    requests: list[tuple[str, str, str, dict[str, list[str]]]] = []
    pods: list[dict[str, Any]] = []
    # a path prefix the fake cluster does not serve (a CRD not installed)
    unserved = "/apis/none/"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, kind: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.requests.append((self.command, url.path, self.headers.get("Content-Type", ""), query))
        assert self.headers["Authorization"] == "Bearer t0ken"
        if url.path.endswith("/log"):
            return self._send(200, f"log of {url.path.split('/')[-2]}\n", "text/plain")
        if url.path.startswith(self.unserved):
            return self._send(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                    "message": "the server could not find the requested resource",
                },
            )
        if url.path.endswith("/pods"):
            return self._send(
                200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods}
            )
        if self.command == "PATCH":
            self.objects[url.path] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            return self._send(200, self.objects[url.path])
        if url.path not in self.objects:
            return self._send(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                    "message": f"{url.path} not found",
                },
            )
        if self.command == "DELETE":
            del self.objects[url.path]
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        self._send(200, self.objects[url.path])

    do_GET = do_PATCH = do_DELETE = _handle


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[tuple[type[FakeAPI], Path]]:
    FakeAPI.objects, FakeAPI.requests, FakeAPI.pods, FakeAPI.unserved = {}, [], [], "/apis/none/"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield FakeAPI, kubeconfig(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_deploy_applies_with_server_side_apply(fake_cluster: tuple[type[FakeAPI], Path]) -> None:
    api, config = fake_cluster
    r = lepton(*DEPLOY, "--namespace", "ml", "--kubeconfig", str(config))
    assert r.returncode == 0, r.stderr
    assert "applied deployment/lepton-digits-cnn-1" in r.stdout and "horizontalpodautoscaler/" in r.stdout
    assert sorted(api.objects) == [
        "/api/v1/namespaces/ml/services/lepton-digits-cnn-1",
        "/apis/apps/v1/namespaces/ml/deployments/lepton-digits-cnn-1",
        "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers/lepton-digits-cnn-1",
    ]
    for method, _, content_type, query in api.requests:
        assert (method, content_type) == ("PATCH", "application/apply-patch+yaml")
        assert query == {"fieldManager": ["lepton"], "force": ["true"]}
    # again: an update in place
    r = lepton(*DEPLOY, "--namespace", "ml", "--kubeconfig", str(config))
    assert r.returncode == 0 and len(api.objects) == 3, r.stderr


def pod(name: str, exit_code: int | None, created: str) -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code}} if exit_code is not None else {"running": {}}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {
            "containerStatuses": [
                {
                    "name": "job",
                    "image": IMAGE,
                    "imageID": "",
                    "ready": exit_code is None,
                    "restartCount": 0,
                    "state": state,
                }
            ]
        },
    }


def test_job_backend_submits_reads_state_and_logs_and_cancels(
    fake_cluster: tuple[type[FakeAPI], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, config = fake_cluster
    monkeypatch.setenv("LEPTON_IMAGE", IMAGE)
    backend = KubernetesBackend(namespace="ml", store_secret="lepton-store", kubeconfig=str(config))
    job_id = backend.submit(12, train_spec())
    assert job_id == "ml/lepton-digits-nightly-12"
    path = "/apis/batch/v1/namespaces/ml/jobs/lepton-digits-nightly-12"
    assert api.objects[path]["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert backend.state(job_id) == ("queued", None)
    api.objects[path]["status"] = {"active": 1, "ready": 1}
    api.pods = [pod("lepton-digits-nightly-12-abcde", None, "2025-01-01T00:00:00Z")]
    assert backend.state(job_id) == ("running", None)
    api.objects[path]["status"] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}
    api.pods = [
        pod("lepton-digits-nightly-12-abcde", 1, "2025-01-01T00:00:00Z"),
        pod("lepton-digits-nightly-12-fghij", 3, "2025-01-01T00:05:00Z"),
    ]
    # the newest attempt's exit code
    assert backend.state(job_id) == ("failed", 3)
    # every attempt, in order
    assert backend.logs(job_id).splitlines() == [
        "==> lepton-digits-nightly-12-abcde <==",
        "log of lepton-digits-nightly-12-abcde",
        "==> lepton-digits-nightly-12-fghij <==",
        "log of lepton-digits-nightly-12-fghij",
    ]
    assert any(
        "labelSelector" in q and q["labelSelector"] == ["app.kubernetes.io/instance=lepton-digits-nightly-12"]
        for _, _, _, q in api.requests
    )
    backend.cancel(job_id)
    assert path not in api.objects and ("DELETE", path) in [(m, p) for m, p, _, _ in api.requests]
    assert backend.state(job_id) == ("cancelled", None)
    # already gone: nothing to do
    backend.cancel(job_id)

    api.unserved = "/apis/kubeflow.org/"
    with pytest.raises(InvalidInputError, match="install the Kubeflow training operator"):
        backend.submit(13, train_spec(nproc=2, nnodes=2))
    api.unserved = "/apis/none/"
    multi = backend.submit(13, train_spec(nproc=2, nnodes=2))
    path = "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs/lepton-digits-nightly-13"
    assert multi == "ml/lepton-digits-nightly-13" and path in api.objects
    api.objects[path]["status"] = {
        "conditions": [{"type": "Created", "status": "True"}, {"type": "Succeeded", "status": "True"}]
    }
    api.pods = [
        pod("lepton-digits-nightly-13-worker-0", 0, "2025-01-01T00:00:01Z"),
        pod("lepton-digits-nightly-13-master-0", 0, "2025-01-01T00:00:00Z"),
    ]
    assert backend.state(multi) == ("succeeded", 0)
    # rank 0 first
    assert backend.logs(multi).splitlines()[0] == "==> lepton-digits-nightly-13-master-0 <=="


def test_job_backend_needs_an_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEPTON_IMAGE", raising=False)
    with pytest.raises(InvalidInputError, match="LEPTON_IMAGE"):
        KubernetesBackend(store_secret="s").submit(1, train_spec())
