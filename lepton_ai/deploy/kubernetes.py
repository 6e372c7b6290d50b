"""Kubernetes: manifests for a served model (Deployment, Service, HorizontalPodAutoscaler) and for
jobs (a batch/v1 Job, or a Kubeflow PyTorchJob for multi-node training), validated offline against
the official schemas and applied with the official client (server-side apply).

Where the model comes from, in every pod:
- `store_secret`: a Secret whose keys (LEPTON_DB_URL=postgresql://…, LEPTON_ARTIFACTS=s3://…, and
  the store's credentials) become the container's environment; `lepton serve` fetches the artifact
  into LEPTON_HOME (an emptyDir) and checks its sha256. Jobs write their results there too.
- `store_pvc`: a PersistentVolumeClaim holding a LEPTON_HOME (registry.db and artifacts/). A
  service mounts it read-only (so every replica, on any node, can share it) and reads the artifacts
  in place; the SQLite registry is copied by an init container into the pod's own writable
  LEPTON_HOME, because the registry opens SQLite in WAL mode with write locks (which need a writable
  directory) and WAL is unsafe across machines. A job mounts it read-write as LEPTON_HOME, since it
  registers versions and keeps checkpoints there (one writing pod at a time: see docs/kubernetes.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs.spec import JobSpec, TrainSpec, memory_bytes
from lepton_ai.store.refs import parse_ref

# LEPTON_HOME in every container (writable: an emptyDir or a job's PVC)
HOME = "/var/lib/lepton"
# a service's read-only PVC
STORE = "/mnt/lepton-store"
# finished Jobs stay a day, so that state and logs can be read, then the cluster removes them
TTL_S = 86400
# endpoints are removed while the pod still answers, then SIGTERM starts the drain
PRESTOP_S = 5
# `lepton serve` drains for ServeSettings.timeout_s (30 s) + 5 after SIGTERM
DRAIN_S = 30 + 5
# the training operator's default port, named "pytorchjob-port"
MASTER_PORT = 23456
# the field manager of server-side apply
MANAGER = "lepton"
# connect, read: an unreachable cluster fails fast
_TIMEOUT = (5, 30)
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def object_name(*parts: str, limit: int = 52) -> str:
    """Return a DNS-1123 name made of `parts` ("lepton", "digits-cnn:2" → "lepton-digits-cnn-2").

    52 characters at most, so that names derived by controllers (pods, `NAME-worker-0` services)
    stay within 63; a longer name is cut and keeps a hash of the whole."""
    # NAME:VERSION → NAME-VERSION is the one rewrite kept as is
    whole = "-".join(parts).replace(":", "-")
    name = re.sub(r"[^a-z0-9]+", "-", whole.lower()).strip("-")
    if not name:
        raise InvalidInputError(f"{'-'.join(parts)!r} gives no valid Kubernetes name")
    # cut or rewritten (digits_cnn, Digits.CNN): a hash keeps them apart
    if len(name) > limit or name != whole:
        name = f"{name[: limit - 9].rstrip('-')}-{hashlib.sha256(whole.encode()).hexdigest()[:8]}"
    return name


def check_dns_name(value: str, what: str) -> str:
    """Return `value` if it is a DNS-1123 label (namespaces, claims, secrets); raise naming `what` otherwise."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value or ""):
        raise InvalidInputError(
            f"{what} {value!r} is not a valid Kubernetes name (lowercase letters, digits, '-')"
        )
    return value


def _cpu(cpus: float) -> str:
    return str(int(cpus)) if float(cpus).is_integer() else f"{round(cpus * 1000)}m"


def _meta(name: str, namespace: str, labels: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        **({"annotations": annotations} if annotations else {}),
    }


def _labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "lepton",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "lepton",
    }


def _pod(
    argv: list[str],
    *,
    image: str,
    cpus: float,
    memory: str | None,
    gpus: int,
    store_pvc: str | None,
    store_secret: str | None,
    writable_store: bool,
    container: str,
    env: Sequence[dict[str, Any]] = (),
    restart_policy: str | None = None,
    shm: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Return the pod spec every lepton manifest uses: one container running `argv` as a non-root user on a
    read-only root filesystem, with its resources, LEPTON_HOME and the artifact store; `extra` adds container fields."""
    if bool(store_pvc) == bool(store_secret):
        raise InvalidInputError(
            "give exactly one of --store-pvc (a PersistentVolumeClaim holding a LEPTON_HOME) "
            "or --store-secret (a Secret with LEPTON_DB_URL and LEPTON_ARTIFACTS)"
        )
    # HOME: torch, Hugging Face and matplotlib write caches under ~, and the root filesystem is read-only.
    env = [
        {"name": "LEPTON_HOME", "value": HOME},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *env,
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    init: list[dict[str, Any]] = []
    # a job: the store is its LEPTON_HOME
    if store_pvc and writable_store:
        volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": store_pvc}})
        mounts.append({"name": "store", "mountPath": HOME})
    # LEPTON_HOME is the pod's own: the artifact cache, or the registry copied from a read-only store
    else:
        volumes.append({"name": "home", "emptyDir": {}})
        mounts.append({"name": "home", "mountPath": HOME})
    if store_pvc and not writable_store:
        volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": store_pvc, "readOnly": True}})
        mounts.append({"name": "store", "mountPath": STORE, "readOnly": True})
        env.append({"name": "LEPTON_ARTIFACTS", "value": f"{STORE}/artifacts"})
        # registry.db and its -wal: a consistent copy that SQLite recovers on first open
        init.append(
            {
                "name": "registry",
                "image": image,
                "command": ["sh", "-c", f"cp {STORE}/registry.db* {HOME}/"],
                "securityContext": _SECURITY,
                "volumeMounts": mounts,
            }
        )
    # DataLoader workers and NCCL share tensors through /dev/shm (64 MiB by default)
    if shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts = [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}]
    requests = {"cpu": _cpu(cpus), **({"memory": memory} if memory else {})}
    # No CPU limit: CFS throttling adds tail latency; the request is what the scheduler and the HPA use.
    limits = {**({"memory": memory} if memory else {}), **({"nvidia.com/gpu": gpus} if gpus else {})}
    main = {
        "name": container,
        "image": image,
        "command": argv,
        "env": env,
        **({"envFrom": [{"secretRef": {"name": store_secret}}]} if store_secret else {}),
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
        "securityContext": _SECURITY,
        "volumeMounts": mounts,
        **extra,
    }
    pod: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **({"initContainers": init} if init else {}),
        "containers": [main],
        "volumes": volumes,
    }
    return {**pod, "restartPolicy": restart_policy} if restart_policy else pod


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
    for value, what in (
        (namespace, "--namespace"),
        (store_pvc, "--store-pvc"),
        (store_secret, "--store-secret"),
        (token_secret, "--token-secret"),
    ):
        if value is not None:
            check_dns_name(value, what)
    name = object_name("lepton", ref)
    labels = _labels(name, "server")
    meta = _meta(name, namespace, labels, **{"lepton.ai/ref": ref})

    def probe(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, **timing}

    # The server listens once the artifact is fetched and checked (the startup probe allows 10 min for
    # that), then /healthz answers while the model loads and /readyz only once it can serve.
    token = [{"name": "LEPTON_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret, "key": "token"}}}]
    pod = _pod(
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
        startupProbe=probe("/healthz", periodSeconds=5, failureThreshold=120),
        readinessProbe=probe("/readyz", periodSeconds=5, timeoutSeconds=2, failureThreshold=2),
        livenessProbe=probe("/healthz", periodSeconds=10, timeoutSeconds=5, failureThreshold=3),
        lifecycle={"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}},
    )
    pod["terminationGracePeriodSeconds"] = PRESTOP_S + DRAIN_S + 5
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            # with an HPA the replica count is the HPA's (it starts at MIN): applying again must not reset it
            **({} if autoscale else {"replicas": replicas}),
            "selector": {
                "matchLabels": {
                    k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")
                }
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": deployment["spec"]["selector"]["matchLabels"],
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    if not autoscale:
        return _separate([deployment, service])
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": autoscale[0],
            "maxReplicas": autoscale[1],
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
    return _separate([deployment, service, hpa])


def job_manifests(
    spec: JobSpec,
    *,
    job_id: int,
    image: str,
    namespace: str = "default",
    store_pvc: str | None = None,
    store_secret: str | None = None,
) -> list[dict[str, Any]]:
    """Return a batch/v1 Job running `spec`, or a Kubeflow PyTorchJob for a train spec over several nodes."""
    if not image:
        raise InvalidInputError(
            "a Kubernetes job needs a container image: set LEPTON_IMAGE (see docs/kubernetes.md)"
        )
    name = object_name("lepton", spec.name, str(job_id))
    labels = {**_labels(name, "job"), "lepton.ai/job-id": str(job_id)}
    meta = _meta(name, namespace, labels)
    # A retried pod resumes from the job's own checkpoints (they survive on a PVC store).
    argv = spec.command(checkpoint_dir=f"{HOME}/checkpoints/job-{job_id}", resume=True)
    env = [{"name": k, "value": v} for k, v in sorted(getattr(spec.spec, "env", {}).items())]
    r = spec.resources
    common = dict(
        image=image,
        cpus=r.cpus,
        memory=r.memory,
        gpus=r.gpus,
        store_pvc=store_pvc,
        store_secret=store_secret,
        writable_store=True,
        env=env,
        shm=True,
    )
    train = spec.spec if isinstance(spec.spec, TrainSpec) else None
    if train is None or train.nnodes == 1:
        pod = _pod(argv, container="job", restart_policy="Never", **common)
        return _separate(
            [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": meta,
                    "spec": {
                        "backoffLimit": spec.retries,
                        "ttlSecondsAfterFinished": TTL_S,
                        "template": {"metadata": {"labels": labels}, "spec": pod},
                    },
                }
            ]
        )
    # Kubeflow training-operator v1 (pkg/controller.v1/pytorch/envvar.go, master.go) sets in every replica's
    # container: MASTER_ADDR (the master's service, NAME-master-0), MASTER_PORT (the container port named
    # "pytorchjob-port" of the container named "pytorch"), RANK (the node rank: Master 0, Worker i → i+1),
    # WORLD_SIZE (replicas × nprocPerNode) and, from v1.7, PET_NPROC_PER_NODE / PET_NNODES / PET_NODE_RANK,
    # which torchrun reads as defaults. Kubernetes expands $(VAR) in the command from that environment.
    argv += [
        "--nnodes",
        str(train.nnodes),
        "--rdzv",
        "$(MASTER_ADDR):$(MASTER_PORT)",
        "--node-rank",
        "$(RANK)",
    ]
    pod = _pod(
        argv, container="pytorch", ports=[{"name": "pytorchjob-port", "containerPort": MASTER_PORT}], **common
    )
    template = {"metadata": {"labels": labels}, "spec": pod}
    role = {"restartPolicy": "OnFailure", "template": template}
    return _separate(
        [
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": "PyTorchJob",
                "metadata": meta,
                "spec": {
                    "nprocPerNode": str(train.nproc),
                    "runPolicy": {
                        "backoffLimit": spec.retries,
                        "ttlSecondsAfterFinished": TTL_S,
                        "cleanPodPolicy": "None",
                    },
                    "pytorchReplicaSpecs": {
                        "Master": {"replicas": 1, **role},
                        "Worker": {"replicas": train.nnodes - 1, **role},
                    },
                },
            }
        ]
    )


def _separate(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return `manifests` with no dict shared between two places (labels, pod templates): editing one
    manifest never edits another."""
    # deepcopy would keep the sharing
    return json.loads(json.dumps(manifests))


# -- validation ---------------------------------------------------------------------------


def _problem(doc: dict[str, Any], version: str) -> str | None:
    """Return the first way `doc` breaks the official schema, as 'field: problem'; None when it is valid."""
    try:
        import kubernetes_validate
    except ImportError as e:
        raise InvalidInputError(
            "validating manifests needs kubernetes-validate: pip install 'lepton-ai[k8s]'"
        ) from e
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".")
        unknown = re.findall(r"'([^']+)'", e.message) if e.validator == "additionalProperties" else []
        # strict schemas refuse fields they do not know: name the field itself
        if unknown:
            return f"{where + '.' if where else ''}{unknown[0]}: unknown field"
        return f"{where or 'the manifest'}: {e.message}"
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.VersionNotSupportedError) as e:
        return f"apiVersion: {e.message}"
    return None


def _pytorchjob_problem(doc: dict[str, Any], version: str) -> str | None:
    """Return the first structural problem of a PyTorchJob, or of its pod templates as core PodTemplateSpecs."""
    spec = doc.get("spec") or {}
    extra = set(spec) - {"runPolicy", "elasticPolicy", "nprocPerNode", "pytorchReplicaSpecs"}
    if extra:
        return f"spec.{sorted(extra)[0]}: unknown field"
    if not isinstance(spec.get("nprocPerNode", ""), str):
        return "spec.nprocPerNode: must be a string (a number or 'auto')"
    roles = spec.get("pytorchReplicaSpecs") or {}
    if set(roles) - {"Master", "Worker"} or (roles.get("Master") or {}).get("replicas") != 1:
        return "spec.pytorchReplicaSpecs: needs exactly one Master replica (and Worker replicas)"
    for role, rs in roles.items():
        where, unknown = (
            f"spec.pytorchReplicaSpecs.{role}",
            sorted(set(rs) - {"replicas", "restartPolicy", "template"}),
        )
        if unknown:
            return f"{where}.{unknown[0]}: unknown field"
        if not isinstance(rs.get("replicas"), int) or rs["replicas"] < 1:
            return f"{where}.replicas: must be a positive integer, got {rs.get('replicas')!r}"
        if rs.get("restartPolicy") not in ("Always", "OnFailure", "Never", "ExitCode"):
            return f"{where}.restartPolicy: must be Always, OnFailure, Never or ExitCode"
        containers = ((rs.get("template") or {}).get("spec") or {}).get("containers") or []
        if "pytorch" not in [c.get("name") for c in containers]:
            return f"{where}.template.spec.containers: the operator needs a container named 'pytorch'"
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": rs["template"],
        }
        problem = _problem(wrapped, version)
        if problem:
            return f"{where}.{problem}"
    return None


def validate(manifests: list[dict[str, Any]], kubernetes_version: str = "1.30") -> None:
    """Check every manifest against the official Kubernetes schemas of `kubernetes_version`, offline and
    strictly (an unknown field is an error); raise InvalidInputError naming the manifest and the field.

    The Kubeflow PyTorchJob CRD's own schema is not shipped with kubernetes-validate: a PyTorchJob's pod
    templates are validated as core PodTemplateSpecs and the rest of its structure is checked here."""
    for doc in manifests:
        what = f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
        name = (doc.get("metadata") or {}).get("name", "")
        if doc.get("apiVersion") == "kubeflow.org/v1" and doc.get("kind") == "PyTorchJob":
            problem = _pytorchjob_problem(doc, kubernetes_version)
        else:
            problem = _problem(doc, kubernetes_version)
        if not problem and not (isinstance(name, str) and len(name) <= 63 and _DNS.match(name)):
            problem = (
                f"metadata.name: {name!r} is not a DNS-1123 name (lowercase letters, digits, '-', 63 at most)"
            )
        if problem:
            raise InvalidInputError(f"{what}: {problem}")


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """Return the manifests as one multi-document YAML text, keys sorted (stable, diffable)."""
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        # a dict used twice (labels, a pod template) is written out twice, never as &id001
        return True


# -- the cluster ----------------------------------------------------------------------------


def _api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """Return an ApiClient from `kubeconfig` (else $KUBECONFIG, else ~/.kube/config, else the in-cluster
    service account); raise InvalidInputError in one line when none can be loaded."""
    try:
        from kubernetes import client, config
    except ImportError as e:
        raise InvalidInputError("talking to Kubernetes needs its client: pip install 'lepton-ai[k8s]'") from e
    # read here, not at import: the client reads $KUBECONFIG once, when it is first imported
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if not any(os.path.exists(os.path.expanduser(p)) for p in path.split(os.pathsep)):
        if kubeconfig or os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise InvalidInputError(
                f"no kubeconfig at {path}: pass --kubeconfig or set KUBECONFIG to your cluster's config"
            )
        # inside a pod: its service account
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    try:
        api = config.new_client_from_config(config_file=path, context=context, persist_config=False)
    except (config.ConfigException, yaml.YAMLError, OSError, ValueError, TypeError, KeyError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise InvalidInputError(
            f"cannot use kubeconfig {path}{f' (context {context})' if context else ''}: {detail}"
        ) from None
    # urllib3 retries: an unreachable server is reported in seconds, not minutes
    api.configuration.retries = 1
    return api


def _call(api: Any, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Return fn(*args, **kwargs); API errors and an unreachable server become one-line InvalidInputErrors."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, _request_timeout=_TIMEOUT, **kwargs)
    except ApiException as e:
        if e.status == 404:
            raise NotFoundError(f"{what}: not found ({_reason(e)})") from None
        raise InvalidInputError(f"{what}: {e.status} {_reason(e)}") from None
    # no server at that address, TLS, timeouts
    except (urllib3.exceptions.HTTPError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(reason))
        raise InvalidInputError(
            f"cannot reach the Kubernetes API at {api.configuration.host}: "
            f"{errno.group(1) if errno else type(reason).__name__}"
        ) from None


def _reason(e: Any) -> str:
    try:
        return json.loads(e.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(e.reason)


def _apply_one(api: Any, doc: dict[str, Any]) -> str:
    """Server-side apply `doc` (created, or updated in place); return 'kind/name'."""
    from kubernetes import client

    ns, name, kind = doc["metadata"].get("namespace", "default"), doc["metadata"]["name"], doc["kind"]
    what = f"{kind.lower()}/{name}"
    ssa = {"field_manager": MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
    group, _, version = doc["apiVersion"].rpartition("/")
    # the core group (a Service) lives under /api/v1
    if not group:
        _call(api, what, client.CoreV1Api(api).patch_namespaced_service, name, ns, doc, **ssa)
        return what
    # Every other kind (apps, autoscaling, batch and the PyTorchJob CRD) lives under
    # /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME: one generic path applies them all.
    try:
        _call(
            api,
            what,
            client.CustomObjectsApi(api).patch_namespaced_custom_object,
            group,
            version,
            ns,
            f"{kind.lower()}s",
            name,
            doc,
            **ssa,
        )
    except NotFoundError as e:
        if group != "kubeflow.org" or "namespaces" in str(e):
            raise
        raise InvalidInputError(
            f"{what}: the cluster does not serve {doc['apiVersion']} {kind}: install the "
            "Kubeflow training operator (docs/kubernetes.md)"
        ) from None
    return what


def apply(
    manifests: list[dict[str, Any]], *, kubeconfig: str | None = None, context: str | None = None
) -> list[str]:
    """Apply the manifests to the cluster of `kubeconfig`/`context` (server-side apply); return 'kind/name' of each."""
    api = _api_client(kubeconfig, context)
    return [_apply_one(api, doc) for doc in manifests]


# -- the job backend ------------------------------------------------------------------------

_JOB_KINDS = (("batch", "v1", "jobs"), ("kubeflow.org", "v1", "pytorchjobs"))


class KubernetesBackend:
    """Runs job specs on a Kubernetes cluster as batch/v1 Jobs, or PyTorchJobs for multi-node training."""

    def __init__(
        self,
        address: str | None = None,
        *,
        image: str | None = None,
        namespace: str = "default",
        store_pvc: str | None = None,
        store_secret: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
    ) -> None:
        """`address` is a kubeconfig context (the cluster to use); the image defaults to $LEPTON_IMAGE and the
        store to $LEPTON_STORE_PVC / $LEPTON_STORE_SECRET (both are needed by `submit` only)."""
        self.image = image or os.environ.get("LEPTON_IMAGE")
        self.namespace = namespace
        self.store_pvc = store_pvc or (None if store_secret else os.environ.get("LEPTON_STORE_PVC"))
        self.store_secret = store_secret or (
            None if self.store_pvc else os.environ.get("LEPTON_STORE_SECRET")
        )
        self.kubeconfig, self.context = kubeconfig, context or address
        self._api: Any = None

    @property
    def api(self) -> Any:
        """Return the ApiClient, made on first use."""
        if self._api is None:
            self._api = _api_client(self.kubeconfig, self.context)
        return self._api

    def submit(self, job_id: int, spec: JobSpec) -> str:
        """Render, validate and apply `spec`; return its external id 'namespace/name'."""
        manifests = job_manifests(
            spec,
            job_id=job_id,
            image=self.image or "",
            namespace=self.namespace,
            store_pvc=self.store_pvc,
            store_secret=self.store_secret,
        )
        validate(manifests)
        for doc in manifests:
            _apply_one(self.api, doc)
        return f"{self.namespace}/{manifests[0]['metadata']['name']}"

    def _find(self, external_id: str) -> tuple[tuple[str, str, str], dict[str, Any]] | None:
        """Return the (group, version, plural) and the object of `external_id`, None when it is gone."""
        from kubernetes import client

        ns, name = _split(external_id)
        for kind in _JOB_KINDS:
            try:
                obj = _call(
                    self.api,
                    external_id,
                    client.CustomObjectsApi(self.api).get_namespaced_custom_object,
                    *kind[:2],
                    ns,
                    kind[2],
                    name,
                )
                return kind, obj
            except NotFoundError:
                continue
        return None

    def _pods(self, external_id: str) -> list[Any]:
        """Return the job's pods, oldest first (a Job's attempts), a PyTorchJob's master (rank 0) before all."""
        from kubernetes import client

        ns, name = _split(external_id)
        pods = _call(
            self.api,
            external_id,
            client.CoreV1Api(self.api).list_namespaced_pod,
            ns,
            label_selector=f"app.kubernetes.io/instance={name}",
        ).items
        pods.sort(
            key=lambda p: p.metadata.creation_timestamp.timestamp() if p.metadata.creation_timestamp else 0
        )
        return sorted(pods, key=lambda p: "-master-" not in p.metadata.name)

    def state(self, external_id: str) -> tuple[str, int | None]:
        """Return queued|running|succeeded|failed|cancelled and the container's exit code once it is known.

        A job that no longer exists was deleted: cancelled (or removed a day after it ended)."""
        found = self._find(external_id)
        if found is None:
            return "cancelled", None
        status = found[1].get("status") or {}
        true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        if true & {"Complete", "Succeeded", "Failed"}:
            state = "failed" if "Failed" in true else "succeeded"
        # a Job counts its ready pods; a PyTorchJob says Running
        else:
            return ("running" if status.get("ready") or "Running" in true else "queued"), None
        # the master's exit code, or the last attempt's
        pods = self._pods(external_id)
        for pod in pods[:1] if pods and "-master-" in pods[0].metadata.name else reversed(pods):
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                for s in (cs.state, cs.last_state):
                    if s is not None and s.terminated is not None:
                        return state, s.terminated.exit_code
        return state, None

    def logs(self, external_id: str) -> str:
        """Return the job's output: its pod's log, or each pod's under a '==> pod <==' header."""
        from kubernetes import client

        ns, _ = _split(external_id)
        core, texts = client.CoreV1Api(self.api), []
        pods = self._pods(external_id)
        for pod in pods:
            try:
                text = _call(self.api, pod.metadata.name, core.read_namespaced_pod_log, pod.metadata.name, ns)
            # not started yet, or already gone
            except (InvalidInputError, NotFoundError):
                continue
            text = text if not text or text.endswith("\n") else text + "\n"
            texts.append(text if len(pods) == 1 else f"==> {pod.metadata.name} <==\n{text}")
        return "".join(texts)

    def cancel(self, external_id: str) -> None:
        """Delete the job and its pods (foreground propagation); a job already gone is left as it is."""
        from kubernetes import client

        found = self._find(external_id)
        if found is not None:
            (group, version, plural), _ = found
            ns, name = _split(external_id)
            with contextlib.suppress(NotFoundError):
                _call(
                    self.api,
                    external_id,
                    client.CustomObjectsApi(self.api).delete_namespaced_custom_object,
                    group,
                    version,
                    ns,
                    plural,
                    name,
                    propagation_policy="Foreground",
                )


def _split(external_id: str) -> tuple[str, str]:
    ns, sep, name = external_id.partition("/")
    if not (sep and ns and name):
        raise InvalidInputError(f"{external_id!r} is not a Kubernetes job id (namespace/name)")
    return ns, name
