"""The job table: every state transition in one transaction; claims exclusive; retries bounded."""

from __future__ import annotations

import threading

import pytest

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs.queue import MAX_LOST, JobQueue
from lepton_ai.jobs.spec import JobSpec, parse


def spec(name: str = "j", retries: int = 0, priority: int = 0) -> JobSpec:
    return parse(
        {
            "kind": "command",
            "name": name,
            "retries": retries,
            "priority": priority,
            "spec": {"argv": ["true"]},
        }
    )


def test_submit_claim_finish_records_attempts_and_versions(queue: JobQueue) -> None:
    job = queue.submit(spec())
    assert (job.state, job.attempts, job.created_at is not None) == ("queued", 0, True)
    running = queue.claim(job.id, "host:1", logs_uri="/logs/1")
    assert running is not None and (running.state, running.attempts, running.worker) == (
        "running",
        1,
        "host:1",
    )
    # a running job cannot be claimed again
    assert queue.claim(job.id, "host:2") is None
    done = queue.finish(job.id, 1, "succeeded", exit_code=0, versions=["m:3"])
    assert (done.state, done.exit_code, done.versions, done.ended_at is not None) == (
        "succeeded",
        0,
        ["m:3"],
        True,
    )
    [attempt] = queue.attempts(job.id)
    assert (attempt.attempt, attempt.state, attempt.exit_code, attempt.logs_uri) == (
        1,
        "succeeded",
        0,
        "/logs/1",
    )


def test_only_one_of_many_concurrent_claims_wins(queue: JobQueue) -> None:
    job = queue.submit(spec())
    wins: list[object] = []
    threads = [
        threading.Thread(target=lambda i=i: wins.append(queue.claim(job.id, f"h:{i}"))) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in wins) == 1
    assert queue.get(job.id).attempts == 1


def test_failures_are_retried_as_often_as_the_spec_says(queue: JobQueue) -> None:
    job = queue.submit(spec(retries=1))
    queue.claim(job.id, "h:1")
    assert queue.finish(job.id, 1, "failed", exit_code=3).state == "queued"
    queue.claim(job.id, "h:1")
    final = queue.finish(job.id, 2, "failed", exit_code=3)
    assert (final.state, final.attempts, final.error) == ("failed", 2, None)


def test_lost_attempts_are_requeued_but_not_forever(queue: JobQueue) -> None:
    job = queue.submit(spec())
    for i in range(MAX_LOST):
        queue.claim(job.id, f"h:{i}")
        state = queue.finish(job.id, i + 1, "lost", error="worker died").state
        assert state == ("queued" if i < MAX_LOST - 1 else "failed")
    assert "died during 5 attempts" in (queue.get(job.id).error or "")


def test_cancel_queued_running_and_finished(queue: JobQueue) -> None:
    queued, running = queue.submit(spec("a")), queue.submit(spec("b"))
    assert queue.request_cancel(queued.id).state == "cancelled"
    assert queue.claim(queued.id, "h:1") is None
    queue.claim(running.id, "h:1")
    flagged = queue.request_cancel(running.id)
    assert (flagged.state, flagged.cancel_requested) == ("running", True)
    # the kill is the cancel
    assert queue.finish(running.id, 1, "failed", exit_code=-15).state == "cancelled"
    with pytest.raises(InvalidInputError, match="already cancelled: nothing to cancel"):
        queue.request_cancel(running.id)
    with pytest.raises(NotFoundError):
        queue.get(999)


def test_queued_order_is_priority_then_age_and_sync_keeps_final_states(queue: JobQueue) -> None:
    low, high, low2 = queue.submit(spec("a")), queue.submit(spec("b", priority=5)), queue.submit(spec("c"))
    assert [j.id for j in queue.queued()] == [high.id, low.id, low2.id]
    remote = queue.submit(spec("r"), backend="ray", address="http://x:8265")
    queue.claim(remote.id, "ray")
    # Ray says PENDING
    assert queue.sync(remote.id, "queued").state == "queued"
    assert queue.sync(remote.id, "succeeded", 0, versions=["m:1"]).versions == ["m:1"]
    # a finished job stays finished
    assert queue.sync(remote.id, "failed").state == "succeeded"
    assert [a.state for a in queue.attempts(remote.id)] == ["succeeded"]
    assert [j.id for j in queue.list(state="succeeded")] == [remote.id]
    with pytest.raises(InvalidInputError):
        queue.list(state="done")


def test_a_late_report_from_a_presumed_dead_worker_changes_nothing(queue: JobQueue) -> None:
    job = queue.submit(spec())
    queue.claim(job.id, "host:111")
    # the next worker requeued it …
    queue.finish(job.id, 1, "lost", error="worker died")
    # … and runs attempt 2
    queue.claim(job.id, "host:222")
    # attempt 1's worker was alive after all
    late = queue.finish(job.id, 1, "failed", exit_code=1)
    assert (late.state, late.attempts, late.worker) == ("running", 2, "host:222")
    # so attempt 2 is not run a second time
    assert queue.claim(job.id, "host:333") is None
    # nor does attempt 1 overwrite attempt 2's process group
    queue.started(job.id, 1, pgid=4242)
    assert queue.get(job.id).pgid is None
    assert [a.state for a in queue.attempts(job.id)] == ["lost", "running"]
