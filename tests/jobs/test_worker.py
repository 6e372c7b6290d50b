"""The local backend for real: `lepton worker` processes running jobs as subprocesses, killed
with SIGKILL and restarted, with nothing lost and nothing run twice at the same time."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lepton_ai.jobs import api
from lepton_ai.jobs.queue import JobQueue
from lepton_ai.jobs.spec import JobSpec, parse
from lepton_ai.jobs.worker import produced_versions
from tests.jobs.conftest import wait_for

# A job that proves it runs alone: it holds a lock on its own file (a second copy running at the
# same time finds it taken), works a little, then leaves a marker named by its attempt.
PROBE = """
import fcntl, os, random, sys, time
d, job, attempt = sys.argv[1], os.environ["LEPTON_JOB_ID"], os.environ["LEPTON_JOB_ATTEMPT"]
f = open(os.path.join(d, job + ".lock"), "a")
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    open(os.path.join(d, job + ".overlap"), "a").close()
    sys.exit(3)
start = time.time()
time.sleep(random.uniform(float(sys.argv[2]) / 2, float(sys.argv[2])))
with open(os.path.join(d, f"{job}.{attempt}.done"), "x") as out:
    out.write(f"{start} {time.time()}")
"""


def probe(name: str, out: Path, work_s: float = 0.2, cpus: float = 1) -> JobSpec:
    return parse(
        {
            "kind": "command",
            "name": name,
            "resources": {"cpus": cpus},
            "spec": {"argv": [sys.executable, "-c", PROBE, str(out), str(work_s)]},
        }
    )


def start_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lepton_ai.cli.main", "worker", "--poll", "0.05", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_until_idle(*args: str, timeout: float = 60) -> None:
    """Run a worker until the queue is empty (it exits once idle) and check that it exited cleanly."""
    worker = start_worker("--idle-exit", "0.5", *args)
    _, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err


def kill9(worker: subprocess.Popen[str]) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.communicate()


@pytest.mark.slow
def test_200_jobs_survive_three_worker_kills(tmp_path: Path, queue: JobQueue) -> None:
    ids = [queue.submit(probe(f"p{i}", tmp_path, 0.15)).id for i in range(200)]
    rng = random.Random(0)
    left_behind = 0
    for _ in range(3):
        worker = start_worker("--cpus", "4")

        # jobs this worker runs (not those the last one left, before recovery)
        def running_here(worker: subprocess.Popen[str] = worker) -> int:
            return sum(
                (j.worker or "").endswith(f":{worker.pid}") for j in queue.list(state="running", limit=10)
            )

        wait_for(running_here)
        time.sleep(rng.uniform(0.2, 1.5))
        # killed mid-job
        wait_for(running_here)
        kill9(worker)
        # exactly these must come back as lost attempts
        left_behind += len(queue.list(state="running", limit=10))
    run_until_idle("--cpus", "4", timeout=240)
    jobs = {j.id: j for j in queue.list(limit=1000)}
    assert all(jobs[i].state == "succeeded" for i in ids), {jobs[i].state for i in ids}
    assert not list(tmp_path.glob("*.overlap")), "two attempts of one job ran at the same time"
    lost = 0
    for i in ids:
        attempts = queue.attempts(i)
        assert [a.state for a in attempts].count("succeeded") == 1
        assert attempts[-1].state == "succeeded" and all(a.state == "lost" for a in attempts[:-1])
        lost += len(attempts) - 1
        # A marker from a lost attempt means it finished just before its worker died; it is re-run, never
        # concurrent.
        done = sorted(int(p.name.split(".")[1]) for p in tmp_path.glob(f"{i}.*.done"))
        assert done[-1] == attempts[-1].attempt and set(done) <= {a.attempt for a in attempts}
    # every job a kill left running was re-run, and only those
    assert lost == left_behind >= 1


def test_jobs_wait_for_their_resources(tmp_path: Path, queue: JobQueue) -> None:
    jobs = [queue.submit(probe(f"s{i}", tmp_path, 0.6, cpus=1)) for i in range(4)]
    jobs += [queue.submit(probe(f"big{i}", tmp_path, 0.6, cpus=2)) for i in range(2)]
    jobs += [queue.submit(probe(f"half{i}", tmp_path, 0.6, cpus=0.5)) for i in range(4)]
    run_until_idle("--cpus", "2")
    assert all(queue.get(j.id).state == "succeeded" for j in jobs)
    spans = [
        (*map(float, (tmp_path / f"{j.id}.1.done").read_text().split()), j.job_spec.resources.cpus)
        for j in jobs
    ]
    edges = sorted([(t0, cpus) for t0, _, cpus in spans] + [(t1, -cpus) for _, t1, cpus in spans])
    load = peak = 0.0
    # the CPUs held at each moment, from the jobs' own clocks
    for _, delta in edges:
        load += delta
        peak = max(peak, load)
    # full, never over: a 2-cpu job waited for two 1-cpu ones, halves paired up
    assert peak == 2.0
    with pytest.raises(Exception, match="asks for 64 cpus but the local worker has"):
        api.submit(
            parse({"kind": "command", "name": "huge", "resources": {"cpus": 64}, "spec": {"argv": ["true"]}}),
            start=False,
        )


@pytest.mark.slow
def test_killed_worker_train_job_resumes_from_its_checkpoint(lepton_home: Path, queue: JobQueue) -> None:
    job = queue.submit(
        parse(
            {
                "kind": "train",
                "name": "resume",
                "resources": {"cpus": 1},
                "spec": {"model": "mlp", "data": "digits", "epochs": 60, "name": "digits-mlp"},
            }
        )
    )
    worker = start_worker()
    ckpt = lepton_home / "checkpoints" / "jobs" / str(job.id) / "last.pt"
    wait_for(ckpt.exists, timeout=120)
    kill9(worker)
    # the job dies with its worker (the kernel kills it when its parent dies)
    wait_for(lambda: not [p for p in Path("/proc").glob("[0-9]*") if _has_job(p, job.id)], timeout=10)
    run_until_idle(timeout=180)
    final = queue.get(job.id)
    assert (final.state, final.versions, [a.state for a in queue.attempts(job.id)]) == (
        "succeeded",
        ["digits-mlp:1"],
        ["lost", "succeeded"],
    )
    log = "".join(api.logs(job.id))
    resumed = int(log.split('"resumed_from_epoch":')[1].split(",")[0])
    assert 0 < resumed < 60


def _has_job(proc: Path, job_id: int) -> bool:
    try:
        return (
            f"LEPTON_JOB_ID={job_id}\0".encode() in (proc / "environ").read_bytes()
            and str(os.environ["LEPTON_HOME"]).encode() in (proc / "environ").read_bytes()
        )
    except OSError:
        return False


def test_cancel_ends_the_whole_process_group_and_logs_stream(tmp_path: Path, stop_worker: None) -> None:
    marker = tmp_path / "grandchild.pid"
    script = (
        f"import subprocess, sys, time; p = subprocess.Popen(['sleep', '300']); "
        f"open({str(marker)!r}, 'w').write(str(p.pid)); print('working', flush=True); time.sleep(300)"
    )
    job = api.submit(
        parse({"kind": "command", "name": "long", "spec": {"argv": [sys.executable, "-c", script]}})
    )
    wait_for(lambda: marker.exists() and marker.read_text())
    grandchild = int(marker.read_text())
    assert "working" in wait_for(lambda: "".join(api.logs(job.id)))
    cancelled = api.cancel(job.id)
    assert cancelled.state == "cancelled"
    wait_for(lambda: not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild), timeout=15)
    with pytest.raises(Exception, match="already cancelled"):
        api.cancel(job.id)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except OSError:
        return "Z"


def test_versions_are_read_from_the_commands_json() -> None:
    assert produced_versions('progress…\n{\n  "name": "digits",\n  "version": 3\n}\n') == ["digits:3"]
    assert produced_versions('{"ref": "m:2", "parent": "m:1"}') == ["m:2"]
    assert produced_versions("no json here") == [] and produced_versions("x\n{broken") == []


def test_bad_jobs_fail_alone_and_leftover_processes_are_ended(tmp_path: Path, queue: JobQueue) -> None:
    from sqlalchemy import update

    from lepton_ai.store.schema import Job

    broken = queue.submit(probe("broken", tmp_path))
    # a row no current spec accepts (say, written by another version)
    with queue.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == broken.id).values(spec={"kind": "train", "name": "broken"}))
    missing = queue.submit(
        parse({"kind": "command", "name": "missing", "spec": {"argv": ["/nonexistent/program"]}})
    )
    pid_file = tmp_path / "orphan.pid"
    leaves = queue.submit(
        parse(
            {
                "kind": "command",
                "name": "leaves",
                "spec": {
                    "argv": [
                        sys.executable,
                        "-c",
                        "import subprocess; p = subprocess.Popen(['sleep', '300']); "
                        f"open({str(pid_file)!r}, 'w').write(str(p.pid))",
                    ]
                },
            }
        )
    )
    good = queue.submit(probe("good", tmp_path))
    run_until_idle()
    states = {
        j: (queue.get(j).state, queue.get(j).error) for j in (broken.id, missing.id, leaves.id, good.id)
    }
    assert states[broken.id][0] == "failed" and "spec.model: Field required" in states[broken.id][1]
    assert states[missing.id][0] == "failed" and "cannot start /nonexistent/program" in states[missing.id][1]
    assert states[leaves.id] == ("succeeded", None) and states[good.id] == ("succeeded", None)
    orphan = int(pid_file.read_text())
    # killed with the job that left it
    assert not Path(f"/proc/{orphan}").exists() or _state(orphan) == "Z"


def test_multi_node_training_needs_kubernetes() -> None:
    spec = parse(
        {
            "kind": "train",
            "name": "big",
            "resources": {"cpus": 2},
            "spec": {"model": "mlp", "data": "digits", "name": "m", "nproc": 2, "nnodes": 2},
        }
    )
    for backend in ("local", "ray"):
        with pytest.raises(Exception, match="spec.nnodes: 2 machines need --backend kubernetes"):
            api.submit(spec, backend, "http://127.0.0.1:9", start=False)


def test_a_start_that_cannot_be_recorded_is_still_watched_and_never_run_twice(
    tmp_path: Path, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from lepton_ai.jobs.worker import Worker

    def dropped(*args: object, **kwargs: object) -> None:
        raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection unexpectedly"))

    job = queue.submit(probe("once", tmp_path, work_s=0.4))
    worker = Worker(poll_s=0.05)
    monkeypatch.setattr(worker.queue, "started", dropped)
    worker.schedule()
    assert queue.get(job.id).state == "running" and job.id in worker.running
    # the next rounds must not start it again beside itself
    deadline = time.monotonic() + 30
    while queue.get(job.id).state == "running" and time.monotonic() < deadline:
        worker.reap()
        worker.schedule()
        time.sleep(0.05)
    assert queue.get(job.id).state == "succeeded" and queue.get(job.id).attempts == 1
    assert not (tmp_path / f"{job.id}.overlap").exists() and (tmp_path / f"{job.id}.1.done").exists()


def test_a_from_env_reference_is_read_from_the_worker_and_never_stored(
    tmp_path: Path, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lepton_ai.jobs.worker import Worker

    monkeypatch.setenv("WORKER_TOKEN", "s3cret-value")
    out = tmp_path / "seen"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['API_TOKEN'])"
    spec = {"argv": [sys.executable, "-c", code], "env": {"API_TOKEN": {"from_env": "WORKER_TOKEN"}}}
    job = queue.submit(parse({"kind": "command", "name": "ref", "spec": spec}))
    missing = queue.submit(
        parse(
            {
                "kind": "command",
                "name": "nope",
                "spec": {"argv": ["true"], "env": {"X": {"from_env": "ABSENT"}}},
            }
        )
    )
    worker = Worker(poll_s=0.05)
    deadline = time.monotonic() + 30
    while {queue.get(j).state for j in (job.id, missing.id)} & {
        "queued",
        "running",
    } and time.monotonic() < deadline:
        worker.schedule()
        worker.reap()
        time.sleep(0.05)
    assert queue.get(job.id).state == "succeeded" and out.read_text() == "s3cret-value"
    assert "s3cret-value" not in str(queue.get(job.id).spec)
    failed = queue.get(missing.id)
    assert failed.state == "failed" and "this worker has no ABSENT" in (failed.error or "")
