"""The Python client against a real server: methods from OpenAPI, errors, retries, token."""

from __future__ import annotations

import threading
import time

import pytest

from lepton_ai.client import Client, ServiceError
from lepton_ai.errors import LeptonError
from lepton_ai.serve import Photon, handler
from lepton_ai.serve.server import free_port


class Adder(Photon):
    def __init__(self, init_seconds: float = 0.0) -> None:
        self.init_seconds = init_seconds

    def init(self) -> None:
        time.sleep(self.init_seconds)

    @handler(max_batch_size=8)
    def add_one(self, inputs: list[float]) -> list[float]:
        """Add one to each number."""
        return [x + 1 for x in inputs]


def test_handlers_become_methods(serve) -> None:
    with serve(Adder()) as url, Client(url) as c:
        assert c.handlers() == {"add_one": "/add_one"}
        assert c.add_one(inputs=[1, 2]) == {"outputs": [2.0, 3.0]}
        assert c.add_one.__doc__ == "Add one to each number."
        assert "add_one" in dir(c)
        with pytest.raises(AttributeError, match="has no handler 'predict'"):
            c.predict(inputs=[1])
        with pytest.raises(ServiceError) as e:
            c.add_one(inputs="x")
        assert e.value.status == 422 and e.value.error == "invalid_input"


def test_a_starting_server_is_retried_until_ready(serve) -> None:
    with serve(Adder(init_seconds=0.6), ready=False) as url:
        with Client(url, retries=6, backoff=0.05) as c:
            start = time.monotonic()
            # 503 not_ready, Retry-After: 1, then 200
            assert c.add_one(inputs=[1]) == {"outputs": [2.0]}
            assert time.monotonic() - start >= 0.5
        with Client(url) as c:
            c.wait_ready(5)
            assert c.ready()


def test_connection_errors_are_retried_then_reported(serve) -> None:
    port = free_port()
    with pytest.raises(LeptonError, match="cannot reach"):
        _ = Client(f"http://127.0.0.1:{port}", retries=1, backoff=0.01).spec

    # a server that comes up while the client backs off
    def later() -> None:
        time.sleep(0.3)
        with serve(Adder(), port=port):
            done.wait(10)

    done = threading.Event()
    threading.Thread(target=later, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{port}", retries=8, backoff=0.1) as c:
            assert c.add_one(inputs=[0]) == {"outputs": [1.0]}
    finally:
        done.set()


def test_the_token_is_sent(serve) -> None:
    with serve(Adder(), token="t0ken") as url:
        with Client(url, token="t0ken") as c:
            assert c.add_one(inputs=[1]) == {"outputs": [2.0]}
        with Client(url, token="nope") as c, pytest.raises(ServiceError) as e:
            c.add_one(inputs=[1])
        assert e.value.status == 401


class Napper(Photon):
    @handler
    def close(self, seconds: float) -> float:
        """Sleep, then answer (named like a Client method)."""
        time.sleep(seconds)
        return seconds


def test_any_handler_is_called_by_name_and_a_slow_answer_times_out(serve) -> None:
    with serve(Napper()) as url, Client(url, timeout=0.3) as c:
        assert c.call("close", seconds=0.01) == 0.01
        start = time.monotonic()
        with pytest.raises(LeptonError, match=r"/close did not answer within 0.3 s"):
            c.call("close", seconds=1.0)
        # not asked again
        assert time.monotonic() - start < 0.9
        with pytest.raises(LeptonError, match="has no handler 'nap'"):
            c.call("nap")
