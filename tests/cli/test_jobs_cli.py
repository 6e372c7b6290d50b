"""`lepton job …`, `lepton worker` and `lepton evaluate` as a user runs them, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lepton_ai.jobs.processes import worker_running


def lepton(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lepton_ai.cli.main", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_submit_follow_and_evaluate_a_train_job(tmp_path: Path, stop_worker: None) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "kind: train\nname: digits-nightly\nresources: {cpus: 1, memory: 1Gi}\n"
        "spec: {model: mlp, data: digits, epochs: 3, name: digits-mlp}\n"
    )
    submitted = lepton("job", "submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    # the id alone, for scripts
    job_id = int(submitted.stdout)
    # returns when the job ends
    follow = lepton("job", "logs", str(job_id), "-f")
    assert follow.returncode == 0 and '"name": "digits-mlp"' in follow.stdout
    status = json.loads(lepton("job", "status", str(job_id), "--json").stdout)
    assert (status["state"], status["exit_code"], status["versions"]) == ("succeeded", 0, ["digits-mlp:1"])
    assert status["logs_uri"].endswith(f"jobs/{job_id}/attempt-1.log") and Path(status["logs_uri"]).exists()
    assert [a["state"] for a in status["attempt_history"]] == ["succeeded"]
    listed = json.loads(lepton("job", "list", "--json").stdout)
    assert [(j["id"], j["state"]) for j in listed] == [(job_id, "succeeded")]
    evaluated = json.loads(lepton("evaluate", "digits-mlp:1", "--data", "digits", "--json").stdout)
    assert evaluated["metrics"]["accuracy"] > 0.85
    # a federated job with client-level DP: ε reaches the registered version
    fl = tmp_path / "fl.yaml"
    fl.write_text(
        "kind: federated\nname: fl-private\nspec: {model: mlp, clients: 4, rounds: 2, name: fl-dp,\n"
        "       privacy: {epsilon: 8, clip: 1.0}}\n"
    )
    fl_id = int(lepton("job", "submit", str(fl)).stdout)
    assert lepton("job", "logs", str(fl_id), "-f").returncode == 0
    assert json.loads(lepton("job", "status", str(fl_id), "--json").stdout)["versions"] == ["fl-dp:1"]
    privacy = json.loads(lepton("models", "show", "fl-dp:1", "--json").stdout)["privacy"]
    assert privacy["epsilon"] <= 8 and privacy["delta"] == 1e-5 and "client-level" in privacy["mechanism"]
    again = lepton("job", "cancel", str(job_id))
    assert (
        again.returncode == 2
        and again.stderr.strip() == f"error: job {job_id} already succeeded: nothing to cancel"
    )


def test_queue_without_a_worker_then_cancel(tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"kind": "command", "name": "later", "spec": {"argv": ["true"]}}))
    job = json.loads(lepton("job", "submit", str(spec), "--no-worker", "--json").stdout)
    assert job["state"] == "queued" and not worker_running()
    cancelled = lepton("job", "cancel", str(job["id"]), "--json")
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["state"] == "cancelled"


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: deploy\nname: x\nspec: {}\n", "kind: 'deploy' is not one of"),
        ("kind: train\nname: x\nspec: {model: mlp, data: digits}\n", "spec.name: Field required"),
        (
            "kind: train\nname: x\nspec: {model: mlp, data: digits, name: m, epochs: many}\n",
            "spec.epochs: Input should be",
        ),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    r = lepton("job", "submit", str(tmp_path / "bad.yaml"))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreachable_backends_and_unknown_jobs_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "j.yaml").write_text('kind: command\nname: x\nspec: {argv: ["true"]}\n')
    t0 = time.monotonic()
    for args, message in (
        (("--backend", "ray", "--address", "http://127.0.0.1:9"), "cannot use the Ray cluster"),
        (("--backend", "slurm"), "backend must be one of local, ray, kubernetes"),
    ):
        r = lepton("job", "submit", str(tmp_path / "j.yaml"), *args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.monotonic() - t0 < 60
    r = lepton("job", "status", "999")
    assert r.returncode == 2 and "no job 999" in r.stderr
    r = lepton("worker", "--memory", "lots")
    assert r.returncode == 2 and "--memory" in r.stderr
