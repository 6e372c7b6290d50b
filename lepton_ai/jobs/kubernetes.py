"""The Kubernetes job backend: a job spec as a batch/v1 Job, or a Kubeflow PyTorchJob for training over
several nodes, applied and followed (state, logs, cancel) through the official client."""

from __future__ import annotations

import contextlib
import os
from typing import Any, NamedTuple

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs.k8s import (
    HOME,
    api_client,
    apply_one,
    call,
    object_meta,
    object_name,
    pod_spec,
    separate,
    standard_labels,
    validate,
)
from lepton_ai.jobs.spec import CommandSpec, JobSpec, SecretKey, TrainSpec

# finished Jobs stay a day, so that state and logs can be read, then the cluster removes them
TTL_S = 86400
# the training operator's default port, named "pytorchjob-port"
MASTER_PORT = 23456


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
    labels = {**standard_labels(name, "job"), "lepton.ai/job-id": str(job_id)}
    meta = object_meta(name, namespace, labels)
    # A retried pod resumes from the job's own checkpoints (they survive on a PVC store).
    argv = spec.command(checkpoint_dir=f"{HOME}/checkpoints/job-{job_id}", resume=True)
    if isinstance(spec.spec, CommandSpec):
        spec.spec.check_backend("kubernetes")
    env = [_env_var(k, v) for k, v in sorted(getattr(spec.spec, "env", {}).items())]
    r = spec.resources
    common: dict[str, Any] = {
        "image": image,
        "cpus": r.cpus,
        "memory": r.memory,
        "gpus": r.gpus,
        "store_pvc": store_pvc,
        "store_secret": store_secret,
        "writable_store": True,
        "env": env,
        "shm": True,
    }
    train = spec.spec if isinstance(spec.spec, TrainSpec) else None
    if train is None or train.nnodes == 1:
        pod = pod_spec(argv, container="job", restart_policy="Never", **common)
        job_spec = {
            "backoffLimit": spec.retries,
            "ttlSecondsAfterFinished": TTL_S,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }
        return separate([{"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}])
    return separate([_pytorchjob(spec, train, argv, meta, labels, common)])


def _pytorchjob(
    spec: JobSpec,
    train: TrainSpec,
    argv: list[str],
    meta: dict[str, Any],
    labels: dict[str, str],
    pod_options: dict[str, Any],
) -> dict[str, Any]:
    """Return the Kubeflow PyTorchJob that trains `train` over its nodes: one Master, the rest Workers.

    Kubeflow training-operator v1 (pkg/controller.v1/pytorch/envvar.go, master.go) sets in every replica's
    container: MASTER_ADDR (the master's service, NAME-master-0), MASTER_PORT (the container port named
    "pytorchjob-port" of the container named "pytorch"), RANK (the node rank: Master 0, Worker i → i+1),
    WORLD_SIZE (replicas × nprocPerNode) and, from v1.7, PET_NPROC_PER_NODE / PET_NNODES / PET_NODE_RANK,
    which torchrun reads as defaults. Kubernetes expands $(VAR) in the command from that environment."""
    argv = [
        *argv,
        *f"--nnodes {train.nnodes} --rdzv $(MASTER_ADDR):$(MASTER_PORT) --node-rank $(RANK)".split(),
    ]
    port = {"name": "pytorchjob-port", "containerPort": MASTER_PORT}
    pod = pod_spec(argv, container="pytorch", ports=[port], **pod_options)
    role = {"restartPolicy": "OnFailure", "template": {"metadata": {"labels": labels}, "spec": pod}}
    run_policy = {"backoffLimit": spec.retries, "ttlSecondsAfterFinished": TTL_S, "cleanPodPolicy": "None"}
    replicas = {"Master": {"replicas": 1, **role}, "Worker": {"replicas": train.nnodes - 1, **role}}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": meta,
        "spec": {"nprocPerNode": str(train.nproc), "runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }


class _Kind(NamedTuple):
    """Where the API serves a kind of job object: /apis/GROUP/VERSION/namespaces/NS/PLURAL."""

    group: str
    version: str
    plural: str


_JOB_KINDS = (_Kind("batch", "v1", "jobs"), _Kind("kubeflow.org", "v1", "pytorchjobs"))


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
            self._api = api_client(self.kubeconfig, self.context)
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
            apply_one(self.api, doc)
        return f"{self.namespace}/{manifests[0]['metadata']['name']}"

    def _find(self, external_id: str) -> tuple[_Kind, dict[str, Any]] | None:
        """Return the kind and the object of `external_id`, None when it is gone."""
        from kubernetes import client

        ns, name = _split(external_id)
        get = client.CustomObjectsApi(self.api).get_namespaced_custom_object
        for kind in _JOB_KINDS:
            try:
                obj = call(self.api, external_id, get, kind.group, kind.version, ns, kind.plural, name)
            except NotFoundError:
                continue
            return kind, obj
        return None

    def _pods(self, external_id: str) -> list[Any]:
        """Return the job's pods, oldest first (a Job's attempts), a PyTorchJob's master (rank 0) before
        all."""
        from kubernetes import client

        ns, name = _split(external_id)
        pods = call(
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
        _, job = found
        status = job.get("status") or {}
        true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        if true & {"Complete", "Succeeded", "Failed"}:
            state = "failed" if "Failed" in true else "succeeded"
        else:
            # a Job counts its ready pods; a PyTorchJob says Running
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
                text = call(self.api, pod.metadata.name, core.read_namespaced_pod_log, pod.metadata.name, ns)
            except (InvalidInputError, NotFoundError):
                # not started yet, or already gone
                continue
            text = text if not text or text.endswith("\n") else text + "\n"
            texts.append(text if len(pods) == 1 else f"==> {pod.metadata.name} <==\n{text}")
        return "".join(texts)

    def cancel(self, external_id: str) -> None:
        """Delete the job and its pods (foreground propagation); a job already gone is left as it is."""
        from kubernetes import client

        found = self._find(external_id)
        if found is None:
            return
        kind, _ = found
        ns, name = _split(external_id)
        delete = client.CustomObjectsApi(self.api).delete_namespaced_custom_object
        with contextlib.suppress(NotFoundError):
            call(
                self.api,
                external_id,
                delete,
                kind.group,
                kind.version,
                ns,
                kind.plural,
                name,
                propagation_policy="Foreground",
            )


def _split(external_id: str) -> tuple[str, str]:
    ns, sep, name = external_id.partition("/")
    if not (sep and ns and name):
        raise InvalidInputError(f"{external_id!r} is not a Kubernetes job id (namespace/name)")
    return ns, name


def _env_var(name: str, value: str | SecretKey) -> dict[str, Any]:
    """Return a container's env entry: a value, or a reference Kubernetes resolves from a Secret."""
    if isinstance(value, SecretKey):
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": value.secret, "key": value.key}}}
    return {"name": name, "value": value}
