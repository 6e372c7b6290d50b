"""What the job tests share: the job table of the test's LEPTON_HOME, ending the worker a submission
started, and waiting for a state rather than for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from lepton_ai.jobs.queue import JobQueue

T = TypeVar("T")


@pytest.fixture
def queue() -> JobQueue:
    """The job table of this test's LEPTON_HOME."""
    return JobQueue()


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, every: float = 0.05) -> T:
    """Return the first true value `predicate` gives, asking every `every` s; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {getattr(predicate, '__name__', predicate)}"
    )
