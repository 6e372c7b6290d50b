"""`lepton deploy`: serve a registered model beyond one machine, on Ray Serve or Kubernetes."""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Annotated, Any

import typer

from lepton_ai.cli.output import console, print_error, print_json
from lepton_ai.errors import InvalidInputError, one_line


def parse_autoscale(text: str) -> tuple[int, int]:
    """Return (MIN, MAX) from 'MIN,MAX'; raise InvalidInputError for anything else."""
    lo, sep, hi = text.partition(",")
    if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
        raise InvalidInputError(f"--autoscale takes MIN,MAX replicas (e.g. 2,6), got {text!r}")
    low, high = int(lo), int(hi)
    if not 1 <= low <= high:
        raise InvalidInputError(f"--autoscale {text}: need 1 <= MIN <= MAX")
    return low, high


def deploy(
    ref: Annotated[str, typer.Argument(help="NAME[:VERSION] in the registry.")],
    target: Annotated[str, typer.Option(help="ray or kubernetes.")],
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            help="Copies of the service (with --autoscale, the HPA's count on Kubernetes, starting at MIN).",
        ),
    ] = 1,
    autoscale: Annotated[
        str | None, typer.Option(metavar="MIN,MAX", help="Scale between MIN and MAX replicas.")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            envvar="LEPTON_IMAGE",
            help="Kubernetes: the container image with lepton-ai (see docs/kubernetes.md).",
        ),
    ] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    store_pvc: Annotated[
        str | None,
        typer.Option(help="Kubernetes: a PersistentVolumeClaim holding a LEPTON_HOME (mounted read-only)."),
    ] = None,
    store_secret: Annotated[
        str | None,
        typer.Option(
            help="Kubernetes: a Secret with LEPTON_DB_URL and LEPTON_"
            "ARTIFACTS (the artifact is fetched and checked)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LEPTON_TOKEN",
            show_default=False,
            help="Ray: require 'Authorization: Bearer TOKEN' (Ray gets its sha256 only; use LEPTON_TOKEN).",
        ),
    ] = None,
    token_secret: Annotated[
        str | None,
        typer.Option(help="Kubernetes: a Secret whose key 'token' is the bearer token handlers require."),
    ] = None,
    cpus: Annotated[float, typer.Option(min=0.001, help="Kubernetes: CPUs requested per replica.")] = 1.0,
    memory: Annotated[str, typer.Option(help="Kubernetes: memory per replica (request and limit).")] = "2Gi",
    gpus: Annotated[int, typer.Option(min=0, help="Kubernetes: NVIDIA GPUs per replica.")] = 0,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Kubernetes: the container's port (8080); Ray: the HTTP port (8000)."
        ),
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(min=1, help="Examples per model call.")] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(min=0, help="Longest wait for a batch to fill.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Kubernetes: worker processes per replica.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Kubernetes: cpu or cuda (cuda when --gpus > 0).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Kubernetes: print the validated manifests, apply nothing.")
    ] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", help="yaml or json.")] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubernetes: kubeconfig file (default $KUBECONFIG or ~/.kube/config).")
    ] = None,
    context: Annotated[str | None, typer.Option(help="Kubernetes: kubeconfig context.")] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray: cluster address HOST:6379 (default: RAY_ADDRESS; no cluster is started for you)."
        ),
    ] = None,
) -> None:
    """Serve REF with N replicas on a Ray cluster (Ray Serve) or a Kubernetes cluster (Deployment, Service,
    HPA)."""
    bounds = parse_autoscale(autoscale) if autoscale is not None else None
    if output not in (None, "yaml", "json"):
        raise InvalidInputError(f"-o/--output is yaml or json, got {output!r}")
    if target == "ray":
        if dry_run:
            raise InvalidInputError("--dry-run renders Kubernetes manifests: use it with --target kubernetes")
        batching = {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms}
        settings = {k: v for k, v in batching.items() if v is not None}
        _on_ray(ref, replicas, bounds, address, port or 8000, settings, output, token)
        return
    if target != "kubernetes":
        raise InvalidInputError(f"--target is ray or kubernetes, got {target!r}")
    from lepton_ai.deploy import kubernetes as k8s

    flags = {
        "--max-batch-size": max_batch_size,
        "--max-wait-ms": max_wait_ms,
        "--workers": workers,
        "--device": device or ("cuda" if gpus else None),
    }
    manifests = k8s.service_manifests(
        ref,
        replicas=replicas,
        image=image or "",
        autoscale=bounds,
        namespace=namespace,
        cpus=cpus,
        memory=memory,
        gpus=gpus,
        port=port or 8080,
        store_pvc=store_pvc,
        store_secret=store_secret,
        token_secret=token_secret,
        serve_args=[arg for flag, value in flags.items() if value is not None for arg in (flag, str(value))],
    )
    k8s.validate(manifests)
    # both forms pipe into `kubectl apply -f -`
    if dry_run:
        listed = jsonlib.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}, indent=2) + "\n"
        sys.stdout.write(listed if output == "json" else k8s.to_yaml(manifests))
        return
    _apply(ref, manifests, namespace, output, kubeconfig, context)


def _on_ray(
    ref: str,
    replicas: int,
    bounds: tuple[int, int] | None,
    address: str | None,
    port: int,
    settings: dict[str, Any],
    output: str | None,
    token: str | None,
) -> None:
    """Deploy `ref` on Ray Serve and say where it answers (and, in one line, when anyone may call it)."""
    from lepton_ai.deploy.ray import deploy_ray

    result = deploy_ray(
        ref,
        replicas=replicas,
        autoscale=bounds,
        address=address,
        http_port=port,
        settings=settings or None,
        token=token,
    )
    _record(ref, result["url"], f"ray:{result['name']}")
    if result["open"]:
        print_error(
            f"{result['url']} answers anyone who can reach the cluster: give a token (LEPTON_TOKEN)",
            "warning",
        )
    if output == "json":
        print_json(result)
        return
    where = f"{result['replicas']} replica(s) on Ray Serve at {result['url']}"
    console.print(f"[green]✓[/] {result['name']}: {where}", highlight=False, soft_wrap=True)


def _apply(
    ref: str,
    manifests: list[dict[str, Any]],
    namespace: str,
    output: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Apply the manifests to the cluster and say what was applied and where the service answers."""
    from lepton_ai.deploy import kubernetes as k8s

    applied = k8s.apply(manifests, kubeconfig=kubeconfig, context=context)
    name = manifests[0]["metadata"]["name"]
    url = f"http://{name}.{namespace}.svc"
    _record(ref, url, f"k8s:{namespace}/{name}")
    if output == "json":
        print_json({"namespace": namespace, "applied": applied, "url": url})
        return
    for what in applied:
        console.print(f"[green]✓[/] applied {what}", highlight=False)
    console.print(
        f"in-cluster URL {url} · wait for it: kubectl -n {namespace} rollout status deployment/{name}",
        highlight=False,
        soft_wrap=True,
    )


def _record(ref: str, url: str, deployment: str) -> None:
    """Record the deployment for the dashboard's services page; a registry that cannot be written is a
    warning, never a failed deploy."""
    from lepton_ai.store.services import UNAVAILABLE, Services, service_name

    try:
        Services().record("deploy", service_name(ref), url, model_ref=ref, deployment=deployment)
    except UNAVAILABLE as e:
        print_error(f"the deployment is not recorded in the registry: {one_line(e)}", "warning")
