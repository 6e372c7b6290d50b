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
from lepton_ai.jobs.spec import parse
from lepton_ai.jobs.worker import lock_path, produced_versions, worker_running

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


def probe(name: str, out: Path, work_s: float = 0.2, cpus: float = 1):  # type: ignore[no-untyped-def]
    return parse(
        {
            "kind": "command",
            "name": name,
            "resources": {"cpus": cpus},
            "spec": {"argv": [sys.executable, "-c", PROBE, str(out), str(work_s)]},
        }
    )


def start_worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lepton_ai.cli.main", "worker", "--poll", "0.05", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def kill9(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    worker.stderr.close()  # type: ignore[union-attr]


@pytest.mark.slow
def test_200_jobs_survive_three_worker_kills(tmp_path: Path) -> None:
    q = JobQueue()
    ids = [q.submit(probe(f"p{i}", tmp_path, 0.15)).id for i in range(200)]
    rng = random.Random(0)
    left_behind = 0
    for _ in range(3):
        worker = start_worker("--cpus", "4")

        # jobs this worker runs (not those the last one left, before recovery)
        def running_here(worker: subprocess.Popen = worker) -> int:
            return sum((j.worker or "").endswith(f":{worker.pid}") for j in q.list(state="running", limit=10))

        wait_for(running_here)
        time.sleep(rng.uniform(0.2, 1.5))
        # killed mid-job
        wait_for(running_here)
        kill9(worker)
        # exactly these must come back as lost attempts
        left_behind += len(q.list(state="running", limit=10))
    last = start_worker("--cpus", "4", "--idle-exit", "0.5")
    assert last.wait(timeout=240) == 0, last.stderr.read()  # type: ignore[union-attr]
    last.stderr.close()  # type: ignore[union-attr]
    jobs = {j.id: j for j in q.list(limit=1000)}
    assert all(jobs[i].state == "succeeded" for i in ids), {jobs[i].state for i in ids}
    assert not list(tmp_path.glob("*.overlap")), "two attempts of one job ran at the same time"
    lost = 0
    for i in ids:
        attempts = q.attempts(i)
        assert [a.state for a in attempts].count("succeeded") == 1
        assert attempts[-1].state == "succeeded" and all(a.state == "lost" for a in attempts[:-1])
        lost += len(attempts) - 1
        # A marker from a lost attempt means it finished just before its worker died; it is re-run, never
        # concurrent.
        done = sorted(int(p.name.split(".")[1]) for p in tmp_path.glob(f"{i}.*.done"))
        assert done[-1] == attempts[-1].attempt and set(done) <= {a.attempt for a in attempts}
    # every job a kill left running was re-run, and only those
    assert lost == left_behind >= 1


def test_jobs_wait_for_their_resources(tmp_path: Path) -> None:
    q = JobQueue()
    jobs = [q.submit(probe(f"s{i}", tmp_path, 0.6, cpus=1)) for i in range(4)]
    jobs += [q.submit(probe(f"big{i}", tmp_path, 0.6, cpus=2)) for i in range(2)]
    jobs += [q.submit(probe(f"half{i}", tmp_path, 0.6, cpus=0.5)) for i in range(4)]
    worker = start_worker("--cpus", "2", "--idle-exit", "0.5")
    assert worker.wait(timeout=60) == 0
    worker.stderr.close()  # type: ignore[union-attr]
    assert all(q.get(j.id).state == "succeeded" for j in jobs)
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
def test_killed_worker_train_job_resumes_from_its_checkpoint(lepton_home: Path) -> None:
    q = JobQueue()
    job = q.submit(
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
    time.sleep(0.5)
    # the job died with its worker
    assert not [p for p in Path("/proc").glob("[0-9]*") if _has_job(p, job.id)]
    worker = start_worker("--idle-exit", "0.5")
    assert worker.wait(timeout=180) == 0
    worker.stderr.close()  # type: ignore[union-attr]
    final = q.get(job.id)
    assert (final.state, final.versions, [a.state for a in q.attempts(job.id)]) == (
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


def test_cancel_ends_the_whole_process_group_and_logs_stream(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    script = (
        f"import subprocess, sys, time; p = subprocess.Popen(['sleep', '300']); "
        f"open({str(marker)!r}, 'w').write(str(p.pid)); print('working', flush=True); time.sleep(300)"
    )
    job = api.submit(
        parse({"kind": "command", "name": "long", "spec": {"argv": [sys.executable, "-c", script]}})
    )
    try:
        wait_for(lambda: marker.exists() and marker.read_text())
        grandchild = int(marker.read_text())
        assert "working" in wait_for(lambda: "".join(api.logs(job.id)))
        cancelled = api.cancel(job.id)
        assert cancelled.state == "cancelled"
        wait_for(lambda: not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild), timeout=15)
        with pytest.raises(Exception, match="already cancelled"):
            api.cancel(job.id)
    finally:
        # the worker `submit` started exits when idle; do not wait for it
        if worker_running():
            pid = int(lock_path().read_text().split(":")[1])
            os.kill(pid, signal.SIGTERM)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except OSError:
        return "Z"


def test_versions_are_read_from_the_commands_json() -> None:
    assert produced_versions('progress…\n{\n  "name": "digits",\n  "version": 3\n}\n') == ["digits:3"]
    assert produced_versions('{"ref": "m:2", "parent": "m:1"}') == ["m:2"]
    assert produced_versions("no json here") == [] and produced_versions("x\n{broken") == []


def test_bad_jobs_fail_alone_and_leftover_processes_are_ended(tmp_path: Path) -> None:
    from sqlalchemy import update

    from lepton_ai.store.schema import Job

    q = JobQueue()
    broken = q.submit(probe("broken", tmp_path))
    # a row no current spec accepts (say, written by another version)
    with q.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == broken.id).values(spec={"kind": "train", "name": "broken"}))
    missing = q.submit(
        parse({"kind": "command", "name": "missing", "spec": {"argv": ["/nonexistent/program"]}})
    )
    pid_file = tmp_path / "orphan.pid"
    leaves = q.submit(
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
    good = q.submit(probe("good", tmp_path))
    worker = start_worker("--idle-exit", "0.5")
    assert worker.wait(timeout=60) == 0, worker.stderr.read()  # type: ignore[union-attr]
    worker.stderr.close()  # type: ignore[union-attr]
    states = {j: (q.get(j).state, q.get(j).error) for j in (broken.id, missing.id, leaves.id, good.id)}
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
