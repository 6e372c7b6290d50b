"""A Photon over real HTTP: batching, bad input, overload, timeouts, disconnects, auth, health, metrics."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lepton_ai.serve import Photon, handler


class Doubler(Photon):
    """Doubles numbers, slowly enough that concurrent requests meet in a batch."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay, self.batches, self.seen = delay, [], []
        self.gate = threading.Event()
        self.gate.set()

    def init(self) -> None:
        self.gate.wait(30)

    @handler(max_batch_size=16, max_wait_ms=10)
    def double(self, inputs: list[float], scale: float = 2.0) -> list[float]:
        """Multiply each number by scale."""
        self.batches.append(len(inputs))
        self.seen.extend(inputs)
        if any(x < 0 for x in inputs):
            raise ValueError("negative numbers are not allowed")
        time.sleep(self.delay)
        return [x * scale for x in inputs]

    @handler
    def hello(self, name: str) -> dict:
        """Greet (one call per request)."""
        return {"greeting": f"hello {name}"}

    @handler
    async def ping(self) -> str:
        """Answer on the event loop."""
        await asyncio.sleep(0)
        return "pong"


def until(done: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until `done()` is true, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def post_many(url: str, bodies: list[dict], path: str = "/double") -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=30) as c, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: c.post(path, json=b), bodies))


def test_concurrent_requests_share_batches_and_keep_their_order(serve) -> None:
    photon = Doubler(delay=0.05)
    with serve(photon) as url:
        answers = post_many(url, [{"inputs": [i, i + 0.5]} for i in range(24)])
        metrics = httpx.get(f"{url}/metrics").text
    assert [r.json()["outputs"] for r in answers] == [[2 * i, 2 * i + 1] for i in range(24)]
    # joined across requests, never over 16
    assert max(photon.batches) > 2 and len(photon.batches) < 24
    assert max(photon.batches) <= 16
    assert f'lepton_batch_size_count{{handler="double"}} {float(len(photon.batches))}' in metrics
    assert 'lepton_requests_total{code="200",handler="double"} 24.0' in metrics


def test_a_request_over_the_batch_size_is_answered_whole_from_calls_of_at_most_it(serve) -> None:
    photon = Doubler(delay=0)
    inputs = [float(i) for i in range(10 * 16 + 3)]
    with serve(photon) as url:
        answer = httpx.post(f"{url}/double", json={"inputs": inputs})
        metrics = httpx.get(f"{url}/metrics").text
    assert answer.json() == {"outputs": [2 * x for x in inputs]}
    assert photon.batches == [16] * 10 + [3]
    # the model's calls, not the request
    assert 'lepton_batch_size_count{handler="double"} 11.0' in metrics
    assert 'lepton_batch_size_bucket{handler="double",le="16.0"} 11.0' in metrics


def test_requests_with_other_options_are_not_mixed(serve) -> None:
    with serve(Doubler(delay=0.05)) as url:
        answers = post_many(url, [{"inputs": [1.0], "scale": float(i % 3)} for i in range(12)])
    assert [r.json()["outputs"] for r in answers] == [[float(i % 3)] for i in range(12)]


def test_one_bad_request_in_a_batch_fails_alone(serve) -> None:
    photon = Doubler(delay=0.05)
    with serve(photon) as url:
        answers = post_many(url, [{"inputs": [-1.0 if i == 5 else float(i)]} for i in range(12)])
    failed = next(
        b
        for b, n in enumerate(photon.batches)
        if n > 1 and -1.0 in photon.seen[sum(photon.batches[:b]) : sum(photon.batches[: b + 1])]
    )
    # one by one
    assert photon.batches[failed + 1 : failed + 1 + photon.batches[failed]] == [1] * photon.batches[failed]
    assert answers[5].status_code == 422
    assert answers[5].json() == {"error": "invalid_input", "message": "negative numbers are not allowed"}
    assert all(r.json()["outputs"] == [2.0 * i] for i, r in enumerate(answers) if i != 5)


def test_an_idle_server_does_not_wait_for_a_batch_to_fill(serve) -> None:
    class Patient(Doubler):
        @handler(max_batch_size=64, max_wait_ms=2000)
        def double(self, inputs: list[float]) -> list[float]:
            return [2 * x for x in inputs]

    with serve(Patient()) as url, httpx.Client(base_url=url) as c:
        c.post("/double", json={"inputs": [1.0]})
        start = time.perf_counter()
        assert c.post("/double", json={"inputs": [2.0]}).json() == {"outputs": [4.0]}
        # far below max_wait_ms: nothing else was coming
        assert time.perf_counter() - start < 0.5


def test_plain_and_async_handlers(serve) -> None:
    with serve(Doubler()) as url, httpx.Client(base_url=url) as c:
        assert c.post("/hello", json={"name": "ada"}).json() == {"greeting": "hello ada"}
        assert c.post("/ping", json={}).json() == "pong"
        assert c.post("/hello", json={}).status_code == 422


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"inputs": "seven"}', 422, "inputs"),
        (b'{"inputs": [1, "x"]}', 422, "inputs.1"),
        (b'{"inputs": [NaN]}', 422, "finite"),
        (b'{"inputs": [1e999]}', 422, "finite"),
        (b'{"inputs": []}', 422, "empty"),
        (b'{"inputs": [1], "extra": 2}', 422, "extra"),
        (b"[1, 2]", 422, "object"),
        (b"", 422, "inputs"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem(serve, body: bytes, status: int, says: str) -> None:
    with serve(Doubler()) as url:
        r = httpx.post(f"{url}/double", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert says.lower() in r.json()["message"].lower()
        # still serving
        assert httpx.post(f"{url}/double", json={"inputs": [1]}).json() == {"outputs": [2.0]}


def test_a_body_over_the_limit_is_refused(serve) -> None:
    with serve(Doubler(), max_body_bytes=1000) as url:
        r = httpx.post(f"{url}/double", json={"inputs": [1.0] * 1000})
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"

        # no Content-Length: the limit holds while reading
        def chunks():
            for _ in range(100):
                yield b" " * 100

        r = httpx.post(f"{url}/double", content=chunks())
        assert r.status_code == 413


def test_a_full_queue_answers_503_with_retry_after_at_once(serve) -> None:
    class Slow(Doubler):
        @handler(max_batch_size=1)
        def double(self, inputs: list[float]) -> list[float]:
            time.sleep(0.3)
            return [2 * x for x in inputs]

    with serve(Slow(), max_queue=2) as url:
        answers = post_many(url, [{"inputs": [float(i)]} for i in range(10)])
    codes = [r.status_code for r in answers]
    assert codes.count(200) >= 3 and codes.count(503) >= 3, codes
    refused = next(r for r in answers if r.status_code == 503)
    assert refused.json()["error"] == "overloaded" and int(refused.headers["retry-after"]) >= 1
    assert all(r.json() == {"outputs": [2.0 * i]} for i, r in enumerate(answers) if r.status_code == 200)


def test_a_request_waiting_past_its_timeout_gets_504(serve) -> None:
    with serve(Doubler(delay=0.6), timeout_s=0.2) as url:
        r = httpx.post(f"{url}/double", json={"inputs": [1.0]}, timeout=5)
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        time.sleep(0.6)
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_client_that_disconnects_is_dropped_from_its_batch(serve) -> None:
    class OneAtATime(Doubler):
        @handler(max_batch_size=1)
        def double(self, inputs: list[float]) -> list[float]:
            self.seen.extend(inputs)
            self.running.set()
            time.sleep(0.4)
            return [2 * x for x in inputs]

    photon = OneAtATime()
    photon.running = threading.Event()
    with serve(photon) as url:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, f"{url}/double", json={"inputs": [1.0]}, timeout=5)
            assert photon.running.wait(5)
            # queued behind the first; gives up and closes
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/double", json={"inputs": [666.0]}, timeout=0.1)
            assert first.result().json() == {"outputs": [2.0]}
        # the server notices the disconnect on its own time
        until(lambda: 'code="499"' in httpx.get(f"{url}/metrics").text)
        assert httpx.post(f"{url}/double", json={"inputs": [3.0]}).json() == {"outputs": [6.0]}
        metrics = httpx.get(f"{url}/metrics").text
    assert 666.0 not in photon.seen and photon.seen == [1.0, 3.0]
    assert 'lepton_requests_total{code="499",handler="double"} 1.0' in metrics


def test_readiness_only_after_init(serve) -> None:
    photon = Doubler()
    photon.gate.clear()
    with serve(photon, ready=False) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").status_code == 503
        r = httpx.post(f"{url}/double", json={"inputs": [1.0]})
        assert r.status_code == 503 and r.json()["error"] == "not_ready" and r.headers["retry-after"] == "1"
        photon.gate.set()
        until(lambda: httpx.get(f"{url}/readyz").status_code == 200)
        assert httpx.post(f"{url}/double", json={"inputs": [1.0]}).status_code == 200


def test_a_failed_init_is_reported_by_health(serve) -> None:
    class Broken(Doubler):
        def init(self) -> None:
            raise RuntimeError("weights missing")

    with serve(Broken(), ready=False) as url:
        deadline = time.monotonic() + 5
        while (r := httpx.get(f"{url}/healthz")).status_code != 500:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # no details unauthenticated
        assert r.json()["error"] == "RuntimeError in init (see the server's log)"
        assert httpx.get(f"{url}/readyz").json()["status"] == "failed"


def test_token_guards_handlers_not_health(serve) -> None:
    with serve(Doubler(), token="s3cret") as url, httpx.Client(base_url=url) as c:
        r = c.post("/double", json={"inputs": [1.0]})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (
            c.post("/double", json={"inputs": [1.0]}, headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
        assert (
            c.post("/double", json={"inputs": [1.0]}, headers={"Authorization": "Bearer s3cret"}).status_code
            == 200
        )
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/openapi.json").json()["paths"]["/double"]["post"]["security"] == [{"bearer": []}]


def test_openapi_docs_and_metrics_names(serve) -> None:
    with serve(Doubler()) as url, httpx.Client(base_url=url) as c:
        c.post("/double", json={"inputs": [1.0]})
        spec = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
        metrics = c.get("/metrics").text
    op = spec["paths"]["/double"]["post"]
    assert op["operationId"] == "double" and op["summary"] == "Multiply each number by scale."
    assert spec["info"]["title"] == "Doubler"
    assert (
        spec["info"]["description"]
        == "Doubles numbers, slowly enough that concurrent requests meet in a batch."
    )
    request = spec["components"]["schemas"]["DoubleRequest"]
    assert request["required"] == ["inputs"] and request["properties"]["inputs"]["type"] == "array"
    # a NaN or infinity is answered as null
    outputs = spec["components"]["schemas"]["DoubleResponse"]["properties"]["outputs"]
    assert outputs["items"]["type"] == ["number", "null"]
    assert (
        request["properties"]["inputs"]["items"]["type"] == "number"
        and request["properties"]["inputs"]["minItems"] == 1
    )
    assert {"/healthz", "/readyz", "/metrics", "/double", "/hello", "/ping"} <= set(spec["paths"])
    samples = [line for line in metrics.splitlines() if not line.startswith("#")]
    for name in (
        'lepton_requests_total{code="200",handler="double"}',
        "lepton_request_duration_seconds_bucket{",
        'lepton_batch_size_bucket{handler="double"',
        'lepton_queue_depth{handler="double"}',
        "lepton_inflight_requests ",
    ):
        assert any(line.startswith(name) for line in samples), name


def test_the_docs_describe_the_service_not_the_library() -> None:
    from lepton_ai.serve.app import Service

    class Undocumented(Doubler):
        pass

    # no docstring of its own: none of Photon's in its API docs
    info = Service(Undocumented())._app.openapi()["info"]
    assert (info["title"], info.get("description", "")) == ("Undocumented", "")


def test_handler_faults_are_500s_and_the_service_goes_on(serve) -> None:
    class Faulty(Doubler):
        @handler(max_batch_size=8)
        def double(self, inputs: list[float]) -> list[float]:
            if inputs[0] == 1:
                # would break an awaiting task if passed through as is
                raise StopIteration
            if inputs[0] == 2:
                raise SystemExit(3)
            if inputs[0] == 3:
                # wrong number of outputs
                return [1.0, 2.0]
            if inputs[0] == 4:
                raise RuntimeError("a bug")
            return [2 * x for x in inputs]

    with serve(Faulty()) as url:
        for x in (1, 2, 3, 4):
            r = httpx.post(f"{url}/double", json={"inputs": [x]})
            assert r.status_code == 500 and r.json()["error"] == "internal", r.text
        assert httpx.post(f"{url}/double", json={"inputs": [5]}).json() == {"outputs": [10.0]}


def test_too_many_examples_in_one_request(serve) -> None:
    with serve(Doubler(), max_examples=10) as url:
        r = httpx.post(f"{url}/double", json={"inputs": [1.0] * 11})
        assert r.status_code == 413 and "11 examples; at most 10" in r.json()["message"]


def test_unknown_route_and_method(serve) -> None:
    with serve(Doubler()) as url:
        assert httpx.post(f"{url}/nope", json={}).status_code == 404
        assert httpx.get(f"{url}/double").status_code in (404, 405)


def test_garbage_bytes_on_the_socket_do_not_hurt(serve) -> None:
    with serve(Doubler()) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"\x00\xff GARBAGE /// HTTP/9.9\r\n\r\n")
            s.recv(1024)
        assert httpx.post(f"{url}/double", json={"inputs": [1.0]}).json() == {"outputs": [2.0]}


class _Stamp:
    """An ASGI middleware that records each HTTP request and stamps its response with a header."""

    def __init__(self, app, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.seen.append(f"{scope['method']} {scope['path']}")

        async def stamped(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, stamped)


def test_a_middleware_added_to_the_service_sees_handler_calls_too() -> None:
    from starlette.testclient import TestClient

    from lepton_ai.serve.app import Service

    seen: list[str] = []
    service = Service(Doubler(delay=0))
    service.add_middleware(_Stamp, seen=seen)
    with TestClient(service) as c:
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = c.post("/double", json={"inputs": [1.5]})
        assert answer.json() == {"outputs": [3.0]} and answer.headers["x-stamp"] == "1"
        assert c.get("/healthz").headers["x-stamp"] == "1"
    assert "POST /double" in seen and "GET /healthz" in seen


def test_a_service_given_only_the_tokens_sha256_requires_the_token(serve) -> None:
    import hashlib

    digest = hashlib.sha256(b"s3cret").hexdigest()
    with serve(Doubler(), token_sha256=digest) as url, httpx.Client(base_url=url) as c:
        body = {"inputs": [1.0]}
        assert c.post("/double", json=body, headers={"Authorization": f"Bearer {digest}"}).status_code == 401
        assert c.post("/double", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/double", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def _stall(port: int, head: bytes) -> socket.socket:
    """Open a connection that sends `head` (a request line, some headers) and then nothing."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    return s


def _closed_within(s: socket.socket, seconds: float) -> bytes:
    """Return what the server sent before closing `s`; fail if it is still open after `seconds`."""
    s.settimeout(seconds)
    got = b""
    while chunk := s.recv(4096):
        got += chunk
    return got


def test_stalled_bodies_do_not_count_against_the_limits_and_get_408(serve) -> None:
    head = (
        b"POST /double HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    with serve(Doubler(), max_concurrency=2, read_timeout_s=1.5) as url:
        port = int(url.rsplit(":", 1)[1])
        stalled = [_stall(port, head) for _ in range(6)]
        try:
            # three times the concurrency waiting for their bodies, and a whole request still runs
            assert httpx.post(f"{url}/double", json={"inputs": [1.0]}).json() == {"outputs": [2.0]}
            answer = _closed_within(stalled[0], 5)
        finally:
            for s in stalled:
                s.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer


def test_a_connection_that_stalls_in_its_headers_is_closed(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lepton_ai.serve.http.HEADER_TIMEOUT_S", 0.5)
    with serve(Doubler()) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port))
        trickling = _stall(port, b"POST /double HTTP/1.1\r\nHost: x\r\n")
        # a connection that answered one request and then starts another it never finishes
        client = _stall(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        client.sendall(b"GET /heal")
        for s in (silent, trickling, client):
            with s:
                assert _closed_within(s, 5) == b""
        assert httpx.get(f"{url}/healthz").status_code == 200
