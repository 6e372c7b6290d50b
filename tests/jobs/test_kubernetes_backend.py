"""The Kubernetes job backend, offline: a Job or a PyTorchJob for a spec, compared with the golden files in
tests/jobs/golden/ and validated against the official schemas (tests/jobs/manifest_checks.py says how to
regenerate them), and submit, state, logs and cancel against a fake API server on loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lepton_ai.errors import InvalidInputError
from lepton_ai.jobs.kubernetes import KubernetesBackend, job_manifests
from lepton_ai.jobs.spec import parse
from tests.fake_kubernetes import IMAGE, FakeAPI, by_kind, container, pod, train_spec
from tests.jobs.manifest_checks import Manifests, assert_golden_is_valid, assert_matches_golden, refusal

GOLDEN = Path(__file__).parent / "golden"

CASES: dict[str, Callable[[], Manifests]] = {
    "job-train": lambda: job_manifests(train_spec(), job_id=12, image=IMAGE, store_pvc="lepton-home"),
    "pytorchjob-2-nodes": lambda: job_manifests(
        train_spec(nproc=2, nnodes=2, resources={"cpus": 8, "gpus": 2, "memory": "32Gi"}),
        job_id=13,
        image=IMAGE,
        namespace="ml",
        store_secret="lepton-store",
    ),
}


def worker(docs: Manifests) -> dict[str, Any]:
    """Return the Worker replicas of the PyTorchJob in `docs`."""
    return docs[0]["spec"]["pytorchReplicaSpecs"]["Worker"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_job_manifests_match_the_golden_files(case: str) -> None:
    assert_matches_golden(GOLDEN / f"{case}.yaml", CASES[case]())


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_job_manifests_pass_the_official_schemas(case: str) -> None:
    assert_golden_is_valid(GOLDEN / f"{case}.yaml", CASES[case]())


@pytest.mark.parametrize(
    "case, change, says",
    [
        (
            "job-train",
            lambda d: d[0]["spec"]["template"]["spec"].update(restartPolicy=7),
            "Job/lepton-digits-nightly-12: spec.template.spec.restartPolicy",
        ),
        (
            "pytorchjob-2-nodes",
            lambda d: container(worker(d)["template"]).update(resourcez={}),
            "PyTorchJob/lepton-digits-nightly-13: "
            "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].resourcez: "
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
        ("pytorchjob-2-nodes", lambda d: worker(d).update(replicas="1"), "Worker.replicas"),
    ],
)
def test_validate_names_the_job_and_the_field(
    case: str, change: Callable[[Manifests], object], says: str
) -> None:
    assert says in refusal(CASES[case](), change)


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
    with pytest.raises(InvalidInputError, match="LEPTON_IMAGE"):
        job_manifests(train_spec(), job_id=1, image="", store_secret="s")
    monkeypatch.delenv("LEPTON_IMAGE", raising=False)
    with pytest.raises(InvalidInputError, match="LEPTON_IMAGE"):
        KubernetesBackend(store_secret="s").submit(1, train_spec())


def test_a_secret_reference_becomes_a_secret_key_ref_and_no_value() -> None:
    env = {"DB_PASSWORD": {"secret": "db-creds", "key": "password"}, "MODE": "fast"}
    spec = parse({"kind": "command", "name": "migrate", "spec": {"argv": ["true"], "env": env}})
    manifests = job_manifests(spec, job_id=3, image=IMAGE, store_secret="lepton-store")
    entries = container(by_kind(manifests)["Job"]["spec"]["template"])["env"]
    assert {
        "name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "password"}},
    } in entries
    assert {"name": "MODE", "value": "fast"} in entries
    local = parse(
        {"kind": "command", "name": "m", "spec": {"argv": ["true"], "env": {"T": {"from_env": "T"}}}}
    )
    with pytest.raises(InvalidInputError, match="not on kubernetes"):
        job_manifests(local, job_id=4, image=IMAGE, store_secret="lepton-store")
