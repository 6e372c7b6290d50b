"""The batcher alone: which requests share a call, what is skipped, when it waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lepton_ai.serve.batching import Batcher, Overloaded, Pace, concat


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def answered() -> Callable[..., list]:
    """`answered(fn, requests, **options)`: queue `requests` ((payload, options) pairs) on a new Batcher of
    `fn` before it starts, let it run them, stop it; return their answers in order (exceptions as values)."""

    def run_all(fn: Callable, requests: list[tuple[Any, dict]], **options: Any) -> list:
        async def main() -> list:
            b = Batcher(fn, **options)
            futures = [b.submit(payload, opts) for payload, opts in requests]
            b.start()
            try:
                return await asyncio.gather(*futures, return_exceptions=True)
            finally:
                await b.stop()

        return asyncio.run(main())

    return run_all


def recording(calls: list):
    def fn(inputs, scale=1):
        calls.append((list(inputs), scale))
        time.sleep(0.01)
        return [x * scale for x in inputs]

    return fn


def test_requests_are_joined_up_to_the_limit_and_split_back_in_order(answered) -> None:
    calls: list = []
    out = answered(recording(calls), [([i, i], {}) for i in range(5)], batched=True, max_batch_size=4)
    assert out == [[i, i] for i in range(5)]
    # two requests of 2 per call, never over 4
    assert [len(c[0]) for c in calls] == [4, 4, 2]


def test_options_are_never_mixed_in_one_call(answered) -> None:
    calls: list = []
    requests = [([1], {"scale": s}) for s in (2, 3, 2, 3, 2)]
    assert answered(recording(calls), requests, batched=True, max_batch_size=8) == [[2], [3], [2], [3], [2]]
    assert sorted(calls, key=lambda c: c[1]) == [([1, 1, 1], 2), ([1, 1], 3)]


@pytest.mark.parametrize("kind", [list, np.array])
def test_a_request_over_the_limit_runs_alone_in_calls_of_at_most_the_limit(answered, kind: Callable) -> None:
    calls: list = []
    big = kind([float(x) for x in range(10 * 4 + 3)])
    out = answered(
        recording(calls), [(big, {"scale": 2}), (kind([4.0]), {"scale": 2})], batched=True, max_batch_size=4
    )
    # what one unsplit call answers, in order
    assert [list(o) for o in out] == [recording([])(big, scale=2), [8.0]]
    assert [len(inputs) for inputs, _ in calls] == [4] * 10 + [3, 1]


def test_a_failing_call_of_a_split_request_fails_that_request_only(answered) -> None:
    calls: list = []

    def fn(inputs):
        calls.append(list(inputs))
        if 13 in inputs:
            raise RuntimeError("unlucky")
        return inputs

    bad, good = answered(fn, [(list(range(20)), {}), ([1], {})], batched=True, max_batch_size=4)
    assert isinstance(bad, RuntimeError) and good == [1]
    # not run again alone: it is alone
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [1]]


def test_cancelled_requests_are_skipped_and_a_full_queue_refuses() -> None:
    calls: list = []

    async def main():
        b = Batcher(recording(calls), batched=True, max_batch_size=8, max_queue=3)
        keep, gone, last = b.submit([1], {}), b.submit([2], {}), b.submit([3], {})
        with pytest.raises(Overloaded):
            b.submit([4], {})
        # its client went away before its turn
        gone.cancel()
        b.start()
        out = await asyncio.gather(keep, last)
        await b.stop()
        return out

    assert run(main()) == [[1], [3]]
    assert calls == [([1, 3], 1)]


def test_a_failing_batch_is_retried_one_request_at_a_time(answered) -> None:
    def fn(inputs):
        if any(x < 0 for x in inputs):
            raise ValueError("negative")
        return [x + 1 for x in inputs]

    ok1, bad, ok2 = answered(fn, [([x], {}) for x in (1, -1, 2)], batched=True, max_batch_size=8)
    assert ok1 == [2] and ok2 == [3] and isinstance(bad, ValueError)


def test_waits_only_when_more_requests_are_expected_soon() -> None:
    pace = Pace()
    # no batch cost measured yet: never wait blind
    assert pace.budget(1, 64, 0.05) == 0.0
    pace.cost.add(0.010)
    # one request a second: nothing else will come in 5 ms
    pace.gap.add(1.0)
    assert pace.budget(1, 64, 0.05) == 0.0
    # a thousand a second: five more come in half a batch's cost
    pace.gap.value = 0.001
    assert pace.budget(1, 64, 0.05) == pytest.approx(0.005)
    # never past max_wait
    assert pace.budget(1, 64, 0.002) == pytest.approx(0.002)
    # already full
    assert pace.budget(64, 64, 0.05) == 0.0


def test_requests_that_arrive_together_count_as_a_rate() -> None:
    pace = Pace()
    time.sleep(0.02)
    # ten in 20 ms: one every 2 ms
    pace.arrived(10)
    assert 0.0019 < pace.gap.value < 0.005


def test_a_batch_waiting_for_more_is_woken_by_each_arrival() -> None:
    async def main():
        b = Batcher(lambda x: x, batched=True, max_batch_size=2, max_wait_ms=2000)
        b.pace.cost.add(4.0)
        # budget: 2 s, as more requests are expected
        b.pace.gap.value = 0.001
        b.start()
        t0 = time.perf_counter()
        first = b.submit([1], {})
        await asyncio.sleep(0.02)
        # fills the batch: it runs now, not when the 2 s budget ends
        second = b.submit([2], {})
        out = await asyncio.gather(first, second)
        elapsed = time.perf_counter() - t0
        await b.stop()
        return out, elapsed

    out, elapsed = run(main())
    assert out == [[1], [2]] and elapsed < 1.0


def test_concat_joins_arrays_and_lists() -> None:
    assert concat([np.zeros((2, 3)), np.ones((1, 3))]).shape == (3, 3)
    assert concat([[1], [2, 3]]) == [1, 2, 3]
    # outputs padded per call: rows of a list
    assert [r.shape for r in concat([np.zeros((1, 2)), np.ones((2, 3))])] == [(2,), (3,), (3,)]


def test_concurrency_runs_that_many_batches_at_once(answered) -> None:
    import threading

    before = threading.active_count()
    # passes only when two calls are inside the handler together
    meeting = threading.Barrier(2, timeout=5)
    threads: set[str] = set()

    def fn(inputs):
        threads.add(threading.current_thread().name)
        meeting.wait()
        return inputs

    # four full batches, two threads
    out = answered(fn, [([i, i], {}) for i in range(4)], batched=True, max_batch_size=2, concurrency=2)
    assert out == [[i, i] for i in range(4)]
    assert threads == {"lepton-batch-0", "lepton-batch-1"} and not meeting.broken
    # stop() ended every batch thread
    assert threading.active_count() == before


def test_array_outputs_are_copied_before_the_next_batch_reuses_their_buffer(answered) -> None:
    import torch

    buffer = np.zeros((4, 2), dtype=np.float32)

    # writes every batch's answers into the same buffer, as some runtimes do
    def reusing(inputs):
        buffer[: len(inputs)] = np.asarray(inputs, dtype=np.float32)[:, None]
        return buffer[: len(inputs)]

    for fn in (
        reusing,
        lambda x: torch.from_numpy(reusing(x)),
        lambda x: torch.tensor(x, dtype=torch.bfloat16),
    ):
        out = answered(fn, [([float(i), float(i)], {}) for i in range(4)], batched=True, max_batch_size=2)
        assert [np.asarray(o, dtype=np.float32).ravel().tolist()[:2] for o in out] == [
            [i, i] for i in range(4)
        ]


def test_options_of_any_kind_group_requests_by_equality(answered) -> None:
    from lepton_ai.serve.batching import options_key

    assert options_key({"scale": 2, "mode": "a"}) == options_key({"mode": "a", "scale": 2})
    assert options_key({"scale": 2}) != options_key({"scale": 3}) and options_key({}) == ()
    assert len({options_key({"x": 1}), options_key({"x": 1.0}), options_key({"x": True})}) == 3
    arrays = [
        options_key({"w": np.array([1.0, 2.0])}),
        options_key({"w": np.array([1.0, 2.0])}),
        options_key({"w": np.array([1.0, 3.0])}),
        options_key({"w": [1, 2]}),
    ]
    assert arrays[0] == arrays[1] and arrays[0] != arrays[2] and isinstance(arrays[0] != arrays[3], bool)
    calls: list = []

    def fn(inputs, w):
        calls.append(len(inputs))
        return [x + sum(w) for x in inputs]

    # unhashable options
    requests = [([1], {"w": np.array(w)}) for w in ([1, 2], [1, 2], [5])]
    assert answered(fn, requests, batched=True, max_batch_size=8) == [[4], [4], [6]] and sorted(calls) == [
        1,
        2,
    ]


def test_outputs_become_rows_numpy_can_share_or_lists() -> None:
    import torch

    from lepton_ai.serve.batching import as_rows

    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    # the mask survives
    assert as_rows(masked) == [1.0, None]
    assert as_rows(np.array(["2020-01-01"], dtype="datetime64[D]"))[0].isoformat() == "2020-01-01"
    # a conjugate view NumPy cannot share
    assert as_rows(torch.tensor([1 + 2j]).conj()) == [1 - 2j]
    rows = as_rows(torch.ones(2, 3))
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float32 and rows.shape == (2, 3)
