"""A served model on Kubernetes, offline: rendered manifests are compared byte for byte with the golden
files in tests/deploy/golden/ and validated against the official Kubernetes schemas
(tests/jobs/manifest_checks.py says how to regenerate them); `lepton deploy --target kubernetes` talks to
a fake API server on loopback. The job backend's tests are in tests/jobs/test_kubernetes_backend.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from lepton_ai.deploy.kubernetes import object_name, service_manifests, validate
from lepton_ai.errors import InvalidInputError
from lepton_ai.store import Services
from tests.fake_kubernetes import IMAGE, FakeAPI, by_kind, container, kubeconfig
from tests.jobs.manifest_checks import Manifests, assert_golden_is_valid, assert_matches_golden, refusal

GOLDEN = Path(__file__).parent / "golden"


CASES: dict[str, Callable[[], Manifests]] = {
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
}


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_manifests_match_the_golden_files(case: str) -> None:
    assert_matches_golden(GOLDEN / f"{case}.yaml", CASES[case]())


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_manifests_pass_the_official_schemas(case: str) -> None:
    assert_golden_is_valid(GOLDEN / f"{case}.yaml", CASES[case]())


def test_service_manifests() -> None:
    m = by_kind(CASES["service-autoscale-secret"]())
    assert set(m) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    assert {d["metadata"]["name"] for d in m.values()} == {"lepton-digits-cnn-1"}
    deployment, pod = m["Deployment"], m["Deployment"]["spec"]["template"]
    # the HPA owns the count
    assert "replicas" not in deployment["spec"]
    c = container(pod)
    assert c["command"] == [
        *"lepton serve digits-cnn:1 --host 0.0.0.0 --port 8080 --max-batch-size 32".split()
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
    assert pod["initContainers"][0]["command"] == [
        "python",
        "-m",
        "lepton_ai.store.snapshot",
        "/mnt/lepton-store/registry.db",
        "/var/lib/lepton/registry.db",
    ]


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
    with pytest.raises(InvalidInputError, match="--memory"):
        service_manifests("m:1", replicas=1, image=IMAGE, memory="lots", store_secret="s")
    with pytest.raises(InvalidInputError, match="MIN <= MAX"):
        service_manifests("m:1", replicas=1, image=IMAGE, autoscale=(5, 2), store_secret="s")


# -- validation refuses what a cluster would refuse -----------------------------------------------


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
            lambda d: container(d[0]["spec"]["template"]).update(imagePullPolicy=["x"]),
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
    ],
)
def test_validate_names_the_manifest_and_the_field(
    case: str, change: Callable[[Manifests], object], says: str
) -> None:
    assert says in refusal(CASES[case](), change)


# -- the CLI ------------------------------------------------------------------------------------


def lepton(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


DEPLOY = (
    *"deploy digits-cnn:1 --target kubernetes --replicas 3 --autoscale 2,6".split(),
    *"--image ghcr.io/x/lepton:0.1 --store-secret lepton-store".split(),
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
        *"deploy m:1 --target kubernetes --autoscale".split(),
        bad,
        *"--image x --store-secret s --dry-run".split(),
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
    # recorded for the services page
    (first,) = Services().list()
    assert (first.kind, first.name, first.model_ref, first.pid) == (
        "deploy",
        "digits-cnn",
        "digits-cnn:1",
        None,
    )
    assert (first.url, first.deployment) == (
        "http://lepton-digits-cnn-1.ml.svc",
        "k8s:ml/lepton-digits-cnn-1",
    )
    # again: an update in place, whose record replaces the first
    r = lepton(*DEPLOY, "--namespace", "ml", "--kubeconfig", str(config))
    assert r.returncode == 0 and len(api.objects) == 3, r.stderr
    assert [s.deployment for s in Services().list(live=True)] == [first.deployment]
    assert Services().get(first.id).stopped_at is not None


def test_a_deploy_the_registry_cannot_record_is_a_warning(fake_cluster: tuple[type[FakeAPI], Path]) -> None:
    _, config = fake_cluster
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"postgresql://lepton@127.0.0.1:{s.getsockname()[1]}/lepton"
    r = lepton(*DEPLOY, "--kubeconfig", str(config), "-o", "json", env={"LEPTON_DB_URL": nobody})
    assert r.returncode == 0 and json.loads(r.stdout)["url"] == "http://lepton-digits-cnn-1.default.svc"
    assert r.stderr.startswith("warning: the deployment is not recorded in the registry: cannot open"), (
        r.stderr
    )
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
