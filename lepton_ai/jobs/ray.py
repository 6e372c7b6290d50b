"""The Ray backend: the same job spec handed to an existing Ray cluster through the Ray Jobs
API; Ray's job states and logs map onto ours."""

from __future__ import annotations

import os
import shlex
import time
from typing import Any

from sqlalchemy.engine import make_url

from lepton_ai import config
from lepton_ai.errors import InvalidInputError, one_line
from lepton_ai.jobs.processes import job_key
from lepton_ai.jobs.spec import CommandSpec, FromEnv, JobSpec

# how long a submission waits for a head node's job agent to come up
_AGENT_WAIT_S = 30.0
_STATES = {
    "PENDING": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "cancelled",
}


def job_env() -> dict[str, str]:
    """Return the environment a job needs to reach this registry (on a cluster: shared DB and store URLs).

    A LEPTON_DB_URL holding a password is not copied: Ray shows runtime environments to anyone who
    can see its dashboard. Give such a URL to the cluster's nodes in their own environment."""
    env = {"LEPTON_HOME": str(config.home())}
    for key in ("LEPTON_DB_URL", "LEPTON_ARTIFACTS"):
        value = os.environ.get(key)
        if value and not (key == "LEPTON_DB_URL" and make_url(value).password):
            env[key] = value
    return env


class RayBackend:
    """Submit, follow and stop jobs on a Ray cluster (`address`: its dashboard URL, e.g. http://head:8265)."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address = address or os.environ.get("RAY_ADDRESS")
        if not self.address:
            raise InvalidInputError("the Ray backend needs --address http://HEAD:8265 (or RAY_ADDRESS)")
        # clusters with token auth (Ray's default for new ones)
        token = os.environ.get("RAY_AUTH_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self.client = JobSubmissionClient(self.address, headers=headers)
        except Exception as e:
            # ConnectionError, ValueError, RuntimeError… all mean "cannot reach it"
            raise InvalidInputError(
                f"cannot use the Ray cluster at {self.address}: {one_line(e, 200)}"
            ) from None

    def submit(self, job_id: int, spec: JobSpec) -> str:
        """Submit `spec` as a Ray job and return its submission id."""
        # `lepton …`: the cluster's environment must have lepton-ai installed
        argv = spec.command()
        r = spec.resources
        kwargs: dict[str, Any] = {
            "entrypoint_num_cpus": r.cpus,
            "entrypoint_num_gpus": r.gpus or None,
            "entrypoint_memory": r.memory_bytes or None,
        }
        if isinstance(spec.spec, CommandSpec):
            spec.spec.check_backend("ray")
        # a {"from_env": NAME} reference stays one: Ray expands ${NAME} from the node's own environment
        own = {
            k: f"${{{v.from_env}}}" if isinstance(v, FromEnv) else v
            for k, v in getattr(spec.spec, "env", {}).items()
        }
        env = {**job_env(), **own, "LEPTON_JOB_ID": str(job_id)}
        # Ray runs the entrypoint through a shell: every word is quoted, nothing from the spec is interpreted.
        options = {
            "entrypoint": shlex.join(argv),
            "runtime_env": {"env_vars": env},
            "submission_id": f"lepton-{job_key(config.db_url(), job_id)}-{spec.name}",
            "metadata": {"lepton_job": str(job_id)},
            **{k: v for k, v in kwargs.items() if v is not None},
        }
        deadline = time.monotonic() + _AGENT_WAIT_S
        while True:
            try:
                return self.client.submit_job(**options)
            except RuntimeError as e:
                # a head that just started has no job agent yet: Ray says to try again later
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def state(self, external_id: str) -> tuple[str, int | None]:
        """Return our state for the Ray job and its driver's exit code when known."""
        info = self.client.get_job_info(external_id)
        return _STATES[str(info.status.value)], info.driver_exit_code

    def logs(self, external_id: str) -> str:
        """Return the Ray job's driver log so far."""
        return self.client.get_job_logs(external_id)

    def cancel(self, external_id: str) -> None:
        """Stop the Ray job."""
        self.client.stop_job(external_id)
