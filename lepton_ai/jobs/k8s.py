"""Kubernetes for every lepton manifest, a job's or a served model's: DNS-1123 names, labels and the pod
spec they share (a non-root container on a read-only root filesystem, with LEPTON_HOME and the artifact
store), offline validation against the official schemas, YAML, and the official client's server-side apply.

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

import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import yaml

from lepton_ai.errors import InvalidInputError, NotFoundError

# LEPTON_HOME in every container (writable: an emptyDir or a job's PVC)
HOME = "/var/lib/lepton"
# a service's read-only PVC
STORE = "/mnt/lepton-store"
# the field manager of server-side apply
MANAGER = "lepton"
# connect, read: an unreachable cluster fails fast
_TIMEOUT = (5, 30)
_DNS = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
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
    """Return `value` if it is a DNS-1123 label (namespaces, claims, secrets); raise naming `what`
    otherwise."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value or ""):
        raise InvalidInputError(
            f"{what} {value!r} is not a valid Kubernetes name (lowercase letters, digits, '-')"
        )
    return value


def cpu_quantity(cpus: float) -> str:
    return str(int(cpus)) if float(cpus).is_integer() else f"{round(cpus * 1000)}m"


def object_meta(name: str, namespace: str, labels: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        **({"annotations": annotations} if annotations else {}),
    }


def standard_labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "lepton",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "lepton",
    }


def pod_spec(
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
    read-only root filesystem, with its resources, LEPTON_HOME and the artifact store; `extra` adds container
    fields."""
    if bool(store_pvc) == bool(store_secret):
        raise InvalidInputError(
            "give exactly one of --store-pvc (a PersistentVolumeClaim holding a LEPTON_HOME) "
            "or --store-secret (a Secret with LEPTON_DB_URL and LEPTON_ARTIFACTS)"
        )
    storage = _storage(image, store_pvc, writable_store, shm)
    # HOME: torch, Hugging Face and matplotlib write caches under ~, and the root filesystem is read-only.
    base_env = [
        {"name": "LEPTON_HOME", "value": HOME},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    requests = {"cpu": cpu_quantity(cpus), **({"memory": memory} if memory else {})}
    # No CPU limit: CFS throttling adds tail latency; the request is what the scheduler and the HPA use.
    limits = {**({"memory": memory} if memory else {}), **({"nvidia.com/gpu": gpus} if gpus else {})}
    main = {
        "name": container,
        "image": image,
        "command": argv,
        "env": [*base_env, *env, *storage.env],
        **({"envFrom": [{"secretRef": {"name": store_secret}}]} if store_secret else {}),
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
        "securityContext": _SECURITY,
        "volumeMounts": storage.mounts,
        **extra,
    }
    pod: dict[str, Any] = {
        "securityContext": _POD_SECURITY,
        **({"initContainers": storage.init} if storage.init else {}),
        "containers": [main],
        "volumes": storage.volumes,
    }
    return {**pod, "restartPolicy": restart_policy} if restart_policy else pod


class _Storage(NamedTuple):
    """The volumes of a pod, the main container's mounts and extra environment, and its init containers."""

    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    env: list[dict[str, Any]]
    init: list[dict[str, Any]]


def _storage(image: str, store_pvc: str | None, writable_store: bool, shm: bool) -> _Storage:
    """Return where a pod keeps its files: /tmp, LEPTON_HOME, the store's PVC if any, /dev/shm if asked."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    env: list[dict[str, Any]] = []
    init: list[dict[str, Any]] = []
    # a job: the store is its LEPTON_HOME
    if store_pvc and writable_store:
        volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": store_pvc}})
        mounts.append({"name": "store", "mountPath": HOME})
    else:
        # LEPTON_HOME is the pod's own: the artifact cache, or the registry copied from a read-only store
        volumes.append({"name": "home", "emptyDir": {}})
        mounts.append({"name": "home", "mountPath": HOME})
    if store_pvc and not writable_store:
        volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": store_pvc, "readOnly": True}})
        mounts.append({"name": "store", "mountPath": STORE, "readOnly": True})
        env.append({"name": "LEPTON_ARTIFACTS", "value": f"{STORE}/artifacts"})
        # SQLite's online backup: one committed moment, even while another pod writes the registry
        copy = {
            "name": "registry",
            "image": image,
            "command": [
                "python",
                "-m",
                "lepton_ai.store.snapshot",
                f"{STORE}/registry.db",
                f"{HOME}/registry.db",
            ],
            "securityContext": _SECURITY,
            "volumeMounts": list(mounts),
        }
        init.append(copy)
    # DataLoader workers and NCCL share tensors through /dev/shm (64 MiB by default)
    if shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return _Storage(volumes, mounts, env, init)


def separate(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return `manifests` with no dict shared between two places (labels, pod templates): editing one
    manifest never edits another."""
    # deepcopy would keep the sharing
    return json.loads(json.dumps(manifests))


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
    """Return the first structural problem of a PyTorchJob, or of its pod templates as core
    PodTemplateSpecs."""
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
        if not problem and not (isinstance(name, str) and len(name) <= 63 and _DNS.fullmatch(name)):
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


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
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


def call(api: Any, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Return fn(*args, **kwargs); API errors and an unreachable server become one-line InvalidInputErrors."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, _request_timeout=_TIMEOUT, **kwargs)
    except ApiException as e:
        if e.status == 404:
            raise NotFoundError(f"{what}: not found ({_reason(e)})") from None
        raise InvalidInputError(f"{what}: {e.status} {_reason(e)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        # no server at that address, TLS, timeouts
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


def apply_one(api: Any, doc: dict[str, Any]) -> str:
    """Server-side apply `doc` (created, or updated in place); return 'kind/name'."""
    from kubernetes import client

    ns, name, kind = doc["metadata"].get("namespace", "default"), doc["metadata"]["name"], doc["kind"]
    what = f"{kind.lower()}/{name}"
    ssa = {"field_manager": MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
    group, _, version = doc["apiVersion"].rpartition("/")
    # the core group (a Service) lives under /api/v1
    if not group:
        call(api, what, client.CoreV1Api(api).patch_namespaced_service, name, ns, doc, **ssa)
        return what
    # Every other kind (apps, autoscaling, batch and the PyTorchJob CRD) lives under
    # /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME: one generic path applies them all.
    try:
        call(
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
    """Apply the manifests to the cluster of `kubeconfig`/`context` (server-side apply); return 'kind/name'
    of each."""
    api = api_client(kubeconfig, context)
    return [apply_one(api, doc) for doc in manifests]
