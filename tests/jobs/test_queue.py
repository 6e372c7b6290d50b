"""The job table: every state transition in one transaction; claims exclusive; retries bounded."""

from __future__ import annotations

import threading

import pytest

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs.queue import MAX_LOST, JobQueue
from lepton_ai.jobs.spec import parse


def spec(name: str = "j", retries: int = 0, priority: int = 0):  # type: ignore[no-untyped-def]
    return parse(
        {
            "kind": "command",
            "name": name,
            "retries": retries,
            "priority": priority,
            "spec": {"argv": ["true"]},
        }
    )


def test_submit_claim_finish_records_attempts_and_versions() -> None:
    q = JobQueue()
    job = q.submit(spec())
    assert (job.state, job.attempts, job.created_at is not None) == ("queued", 0, True)
    running = q.claim(job.id, "host:1", logs_uri="/logs/1")
    assert running is not None and (running.state, running.attempts, running.worker) == (
        "running",
        1,
        "host:1",
    )
    # a running job cannot be claimed again
    assert q.claim(job.id, "host:2") is None
    done = q.finish(job.id, 1, "succeeded", exit_code=0, versions=["m:3"])
    assert (done.state, done.exit_code, done.versions, done.ended_at is not None) == (
        "succeeded",
        0,
        ["m:3"],
        True,
    )
    [attempt] = q.attempts(job.id)
    assert (attempt.attempt, attempt.state, attempt.exit_code, attempt.logs_uri) == (
        1,
        "succeeded",
        0,
        "/logs/1",
    )


def test_only_one_of_many_concurrent_claims_wins() -> None:
    q = JobQueue()
    job = q.submit(spec())
    wins: list[object] = []
    threads = [threading.Thread(target=lambda i=i: wins.append(q.claim(job.id, f"h:{i}"))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in wins) == 1
    assert q.get(job.id).attempts == 1


def test_failures_are_retried_as_often_as_the_spec_says() -> None:
    q = JobQueue()
    job = q.submit(spec(retries=1))
    q.claim(job.id, "h:1")
    assert q.finish(job.id, 1, "failed", exit_code=3).state == "queued"
    q.claim(job.id, "h:1")
    final = q.finish(job.id, 2, "failed", exit_code=3)
    assert (final.state, final.attempts, final.error) == ("failed", 2, None)


def test_lost_attempts_are_requeued_but_not_forever() -> None:
    q = JobQueue()
    job = q.submit(spec())
    for i in range(MAX_LOST):
        q.claim(job.id, f"h:{i}")
        state = q.finish(job.id, i + 1, "lost", error="worker died").state
        assert state == ("queued" if i < MAX_LOST - 1 else "failed")
    assert "died during 5 attempts" in (q.get(job.id).error or "")


def test_cancel_queued_running_and_finished() -> None:
    q = JobQueue()
    queued, running = q.submit(spec("a")), q.submit(spec("b"))
    assert q.request_cancel(queued.id).state == "cancelled"
    assert q.claim(queued.id, "h:1") is None
    q.claim(running.id, "h:1")
    flagged = q.request_cancel(running.id)
    assert (flagged.state, flagged.cancel_requested) == ("running", True)
    # the kill is the cancel
    assert q.finish(running.id, 1, "failed", exit_code=-15).state == "cancelled"
    with pytest.raises(InvalidInputError, match="already cancelled: nothing to cancel"):
        q.request_cancel(running.id)
    with pytest.raises(NotFoundError):
        q.get(999)


def test_queued_order_is_priority_then_age_and_sync_keeps_final_states() -> None:
    q = JobQueue()
    low, high, low2 = q.submit(spec("a")), q.submit(spec("b", priority=5)), q.submit(spec("c"))
    assert [j.id for j in q.queued()] == [high.id, low.id, low2.id]
    remote = q.submit(spec("r"), backend="ray", address="http://x:8265")
    q.claim(remote.id, "ray")
    # Ray says PENDING
    assert q.sync(remote.id, "queued").state == "queued"
    assert q.sync(remote.id, "succeeded", 0, versions=["m:1"]).versions == ["m:1"]
    # a finished job stays finished
    assert q.sync(remote.id, "failed").state == "succeeded"
    assert [a.state for a in q.attempts(remote.id)] == ["succeeded"]
    assert [j.id for j in q.list(state="succeeded")] == [remote.id]
    with pytest.raises(InvalidInputError):
        q.list(state="done")


def test_a_late_report_from_a_presumed_dead_worker_changes_nothing() -> None:
    q = JobQueue()
    job = q.submit(spec())
    q.claim(job.id, "host:111")
    # the next worker requeued it …
    q.finish(job.id, 1, "lost", error="worker died")
    # … and runs attempt 2
    q.claim(job.id, "host:222")
    # attempt 1's worker was alive after all
    late = q.finish(job.id, 1, "failed", exit_code=1)
    assert (late.state, late.attempts, late.worker) == ("running", 2, "host:222")
    # so attempt 2 is not run a second time
    assert q.claim(job.id, "host:333") is None
    # nor does attempt 1 overwrite attempt 2's process group
    q.started(job.id, 1, pgid=4242)
    assert q.get(job.id).pgid is None
    assert [a.state for a in q.attempts(job.id)] == ["lost", "running"]
