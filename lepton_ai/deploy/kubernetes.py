"""Kubernetes for a served model: a Deployment and a Service, and with autoscaling a
HorizontalPodAutoscaler, in the pod spec every lepton manifest shares (lepton_ai.jobs.k8s); validated,
written as YAML and applied with the same functions as jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lepton_ai.errors import InvalidInputError
from lepton_ai.jobs.k8s import (
    apply,
    check_dns_name,
    object_meta,
    object_name,
    pod_spec,
    separate,
    standard_labels,
    to_yaml,
    validate,
)
from lepton_ai.jobs.spec import memory_bytes
from lepton_ai.store.refs import parse_ref

# the deployment's manifests are applied, validated and printed as jobs' are
__all__ = ["apply", "object_name", "service_manifests", "to_yaml", "validate"]

# endpoints are removed while the pod still answers, then SIGTERM starts the drain
PRESTOP_S = 5
# `lepton serve` drains for ServeSettings.timeout_s (30 s) + 5 after SIGTERM
DRAIN_S = 30 + 5


def service_manifests(
    ref: str,
    *,
    replicas: int,
    image: str,
    autoscale: tuple[int, int] | None = None,
    namespace: str = "default",
    cpus: float = 1.0,
    memory: str = "2Gi",
    gpus: int = 0,
    port: int = 8080,
    store_pvc: str | None = None,
    store_secret: str | None = None,
    token_secret: str | None = None,
    serve_args: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Return the Deployment and Service (and with `autoscale`, a HorizontalPodAutoscaler) serving `ref`."""
    _check(ref, replicas, image, autoscale, memory, namespace, store_pvc, store_secret, token_secret)
    name = object_name("lepton", ref)
    labels = standard_labels(name, "server")
    meta = object_meta(name, namespace, labels, **{"lepton.ai/ref": ref})
    token = [{"name": "LEPTON_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret, "key": "token"}}}]
    pod = pod_spec(
        ["lepton", "serve", ref, "--host", "0.0.0.0", "--port", str(port), *serve_args],
        image=image,
        cpus=cpus,
        memory=memory,
        gpus=gpus,
        store_pvc=store_pvc,
        store_secret=store_secret,
        writable_store=False,
        container="server",
        env=token if token_secret else [],
        ports=[{"name": "http", "containerPort": port}],
        **_probes(),
        lifecycle={"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}},
    )
    pod["terminationGracePeriodSeconds"] = PRESTOP_S + DRAIN_S + 5
    deployment = _deployment(meta, labels, pod, port, None if autoscale else replicas)
    selector = deployment["spec"]["selector"]["matchLabels"]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    if not autoscale:
        return separate([deployment, service])
    return separate([deployment, service, _autoscaler(meta, name, *autoscale)])


def _check(
    ref: str,
    replicas: int,
    image: str,
    autoscale: tuple[int, int] | None,
    memory: str,
    namespace: str,
    store_pvc: str | None,
    store_secret: str | None,
    token_secret: str | None,
) -> None:
    """Raise, naming the option, when a deployment's options cannot make valid manifests."""
    if replicas < 1:
        raise InvalidInputError(f"--replicas must be at least 1, got {replicas}")
    if autoscale and not 1 <= autoscale[0] <= autoscale[1]:
        raise InvalidInputError(f"--autoscale {autoscale[0]},{autoscale[1]}: need 1 <= MIN <= MAX")
    if not image:
        raise InvalidInputError(
            "--image is required: the container image with lepton-ai (see docs/kubernetes.md)"
        )
    try:
        memory_bytes(memory)
    except ValueError as e:
        raise InvalidInputError(f"--memory: {e}") from None
    parse_ref(ref)
    names = {"--namespace": namespace, "--store-pvc": store_pvc, "--store-secret": store_secret}
    for what, value in {**names, "--token-secret": token_secret}.items():
        if value is not None:
            check_dns_name(value, what)


def _probes() -> dict[str, Any]:
    """Return the server container's probes.

    The server listens once the artifact is fetched and checked (the startup probe allows 10 min for
    that), then /healthz answers while the model loads and /readyz only once it can serve."""

    def probe(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, **timing}

    return {
        "startupProbe": probe("/healthz", periodSeconds=5, failureThreshold=120),
        "readinessProbe": probe("/readyz", periodSeconds=5, timeoutSeconds=2, failureThreshold=2),
        "livenessProbe": probe("/healthz", periodSeconds=10, timeoutSeconds=5, failureThreshold=3),
    }


def _deployment(
    meta: dict[str, Any], labels: dict[str, str], pod: dict[str, Any], port: int, replicas: int | None
) -> dict[str, Any]:
    """Return the Deployment of the server pods, scraped by Prometheus (`replicas` None: the HPA decides)."""
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            # with an HPA the replica count is the HPA's (it starts at MIN): applying again must not reset it
            **({} if replicas is None else {"replicas": replicas}),
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
        },
    }


def _autoscaler(meta: dict[str, Any], name: str, low: int, high: int) -> dict[str, Any]:
    """Return the HorizontalPodAutoscaler keeping the Deployment `name` between `low` and `high` replicas."""
    utilisation = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [{"type": "Resource", "resource": utilisation}],
        },
    }
