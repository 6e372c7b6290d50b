"""The Ray backend against a real local cluster (`ray start --head` on loopback): a train job
runs there and registers into this registry; status, logs and cancel map onto ours."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lepton_ai.errors import InvalidInputError
from lepton_ai.jobs import api
from lepton_ai.jobs.queue import JobInfo
from lepton_ai.jobs.spec import parse
from lepton_ai.store import Registry
from tests.jobs.conftest import wait_for

if TYPE_CHECKING:
    from tests.conftest import RayCluster

pytestmark = pytest.mark.slow


def wait_done(job_id: int, timeout: float = 240.0) -> JobInfo:
    def finished() -> JobInfo | None:
        job = api.status(job_id)
        return job if job.done else None

    return wait_for(finished, timeout, every=1.0)


def test_a_train_job_runs_on_ray_and_registers_here(ray_cluster: RayCluster) -> None:
    spec = parse(
        {
            "kind": "train",
            "name": "ray-train",
            "resources": {"cpus": 1, "memory": "1Gi"},
            "spec": {"model": "mlp", "data": "digits", "epochs": 2, "name": "ray-mlp"},
        }
    )
    job = api.submit(spec, "ray", ray_cluster.dashboard_url)
    assert job.backend == "ray" and job.external_id.endswith(f"-{job.id}-ray-train")
    done = wait_done(job.id)
    log = "".join(api.logs(job.id))
    assert (done.state, done.exit_code, done.versions) == ("succeeded", 0, ["ray-mlp:1"]), log[-2000:]
    # written to this test's registry
    assert Registry().get("ray-mlp:1").metrics["accuracy"] > 0.8
    assert '"name": "ray-mlp"' in log


def test_cancel_stops_the_ray_job(ray_cluster: RayCluster) -> None:
    spec = parse(
        {
            "kind": "command",
            "name": "sleeper",
            "resources": {"cpus": 0.5},
            "spec": {"argv": [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)"]},
        }
    )
    job = api.submit(spec, "ray", ray_cluster.dashboard_url)
    wait_for(lambda: api.status(job.id).state == "running", timeout=120, every=0.5)
    assert api.cancel(job.id).state == "cancelled"
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    wait_for(lambda: str(client.get_job_status(job.external_id).value) == "STOPPED", timeout=60, every=0.5)
    with pytest.raises(Exception, match="already cancelled"):
        api.cancel(job.id)


def test_a_submission_waits_for_a_new_heads_job_agent(
    monkeypatch: pytest.MonkeyPatch, lepton_home: Path
) -> None:
    from lepton_ai.jobs import ray as ray_backend

    # Ray's answer while a new head's job agent is still starting, twice, then a job
    class Client:
        def __init__(self, errors: list[str]) -> None:
            self.errors, self.calls = errors, 0

        def submit_job(self, **options: object) -> str:
            self.calls += 1
            if self.errors:
                raise RuntimeError(self.errors.pop(0))
            return str(options["submission_id"])

    monkeypatch.setattr(ray_backend.time, "sleep", lambda s: None)
    spec = parse({"kind": "train", "name": "t", "spec": {"model": "mlp", "data": "digits", "name": "m"}})
    backend = object.__new__(ray_backend.RayBackend)
    busy = "Request failed with status code 500: No available agent to submit job, please try again later.."
    backend.client = Client([busy, busy])
    assert backend.submit(7, spec).endswith("-t") and backend.client.calls == 3
    # not transient: raised
    backend.client = Client(["Request failed with status code 400: bad runtime_env"])
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        backend.submit(8, spec)
    assert backend.client.calls == 1


def test_a_from_env_reference_reaches_ray_as_a_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_ai.jobs.ray import RayBackend

    sent: dict[str, Any] = {}

    class Client:
        def submit_job(self, **options: Any) -> str:
            sent.update(options)
            return "raysubmit_1"

    backend = RayBackend.__new__(RayBackend)
    backend.address, backend.client = "http://head:8265", Client()
    env = {"API_TOKEN": {"from_env": "NODE_TOKEN"}, "MODE": "fast"}
    backend.submit(7, parse({"kind": "command", "name": "c", "spec": {"argv": ["true"], "env": env}}))
    assert sent["runtime_env"]["env_vars"]["API_TOKEN"] == "${NODE_TOKEN}"
    assert sent["runtime_env"]["env_vars"]["MODE"] == "fast"
    secret = {"DB": {"secret": "db-creds", "key": "password"}}
    with pytest.raises(InvalidInputError, match="not on ray"):
        backend.submit(8, parse({"kind": "command", "name": "c", "spec": {"argv": ["true"], "env": secret}}))
