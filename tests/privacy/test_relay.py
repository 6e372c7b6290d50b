from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.common.constant import ErrorCode  # noqa: E402
from flwr.common.serde import message_to_proto  # noqa: E402

from lepton_ai.errors import LeptonError  # noqa: E402
from lepton_ai.machine import free_port  # noqa: E402
from lepton_ai.privacy.relay import (  # noqa: E402
    HELLO,
    Joined,
    RelayGrid,
    client_tls,
    connect,
    recv_frame,
    send_frame,
    serve_client,
    server_tls,
)
from tests.privacy.federation import certificates  # noqa: E402


class Echo:
    """A client app that answers with what it was sent and how many messages this client has had."""

    def __call__(self, message: Message, context: Context) -> Message:
        seen = int(context.state.config_records.get("seen", ConfigRecord({"n": 0}))["n"]) + 1
        context.state.config_records["seen"] = ConfigRecord({"n": seen})
        text = message.content.config_records["ask"]["text"]
        if text == "fail":
            raise ValueError("asked to fail")
        return Message(RecordDict({"answer": ConfigRecord({"text": text, "seen": seen})}), reply_to=message)


@pytest.fixture
def grid() -> Iterator[RelayGrid]:
    with RelayGrid(f"127.0.0.1:{free_port()}", timeout=30) as g:
        yield g


def _endpoint(grid: RelayGrid) -> tuple[str, int]:
    host, port = grid._listener.getsockname()[:2]
    return host, port


def _address(grid: RelayGrid) -> str:
    return "{}:{}".format(*_endpoint(grid))


def _join(grid: RelayGrid, tls: ssl.SSLContext | None = None) -> threading.Thread:
    """Start a client answering with `Echo` in a thread; return it once the grid counts it."""
    known = set(grid.get_node_ids())
    joined = connect(_address(grid), tls=tls, timeout=10)
    thread = threading.Thread(target=_serve, args=(joined,), daemon=True)
    thread.start()
    _until(lambda: len(set(grid.get_node_ids()) - known) == 1)
    return thread


def _serve(joined: Joined) -> None:
    with joined.sock:
        serve_client(joined, Echo(), {})


def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _ask(node: int, text: str) -> Message:
    return Message(RecordDict({"ask": ConfigRecord({"text": text})}), node, "query")


def _answers(replies: list[Message]) -> dict[int, object]:
    return {
        r.metadata.src_node_id: r.error.code if r.has_error() else r.content.config_records["answer"]["text"]
        for r in replies
    }


def test_each_client_answers_its_own_messages_and_keeps_its_state(grid: RelayGrid) -> None:
    _join(grid), _join(grid)
    a, b = sorted(grid.get_node_ids())
    replies = list(grid.send_and_receive([_ask(a, "to a"), _ask(b, "to b")]))
    assert _answers(replies) == {a: "to a", b: "to b"}
    assert {r.metadata.reply_to_message_id for r in replies} != {""}
    (again,) = grid.send_and_receive([_ask(a, "again")])
    # a client is one process for the whole federation: what its app keeps in its context stays
    assert again.content.config_records["answer"]["seen"] == 2


def test_a_client_that_fails_or_leaves_answers_with_an_error_at_once(grid: RelayGrid) -> None:
    _join(grid)
    (node,) = grid.get_node_ids()
    (failed,) = grid.send_and_receive([_ask(node, "fail")])
    assert failed.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "asked to fail" in failed.error.reason

    silent, quiet = _raw_client(grid)
    _until(lambda: quiet in grid.get_node_ids())
    threading.Timer(0.3, silent.close).start()
    started = time.monotonic()
    (gone,) = grid.send_and_receive([_ask(quiet, "anyone?")])
    # known as soon as its connection closes, not after the 30 s timeout
    assert gone.error.code == ErrorCode.NODE_UNAVAILABLE and time.monotonic() - started < 5
    assert gone.metadata.src_node_id == quiet and list(grid.get_node_ids()) == [node]
    (absent,) = grid.send_and_receive([_ask(quiet, "still there?")])
    assert absent.error.code == ErrorCode.NODE_UNAVAILABLE


def _raw_client(grid: RelayGrid) -> tuple[socket.socket, int]:
    """Connect as a client speaking the protocol by hand; return its connection and node id."""
    import json

    sock = socket.create_connection(_endpoint(grid))
    send_frame(sock, HELLO)
    return sock, int(json.loads(recv_frame(sock, 4096))["node_id"])


def _forged_reply(sent: Message, **metadata: object) -> bytes:
    reply = Message(RecordDict({"answer": ConfigRecord({"text": "forged"})}), reply_to=sent)
    for key, value in metadata.items():
        reply.metadata.__dict__[f"_{key}"] = value
    return message_to_proto(reply).SerializeToString()


@pytest.mark.parametrize("attack", ["garbage", "too long", "in another's name", "to another's message"])
def test_a_client_breaking_the_protocol_fails_alone(grid: RelayGrid, attack: str) -> None:
    _join(grid)
    (honest,) = grid.get_node_ids()
    sock, attacker = _raw_client(grid)
    _until(lambda: attacker in grid.get_node_ids())
    grid.max_frame = 1 << 20
    to_honest, to_attacker = _ask(honest, "hello"), _ask(attacker, "hello")

    def attack_when_asked() -> None:
        recv_frame(sock, 1 << 20)
        # the server may close the connection while the attack is still being written
        with contextlib.suppress(OSError):
            send(attack)

    def send(attack: str) -> None:
        if attack == "garbage":
            send_frame(sock, b"\xff\x00 not a message")
        elif attack == "too long":
            send_frame(sock, b"\x00" * (2 << 20))
        elif attack == "in another's name":
            send_frame(sock, _forged_reply(to_attacker, src_node_id=honest))
        else:
            send_frame(sock, _forged_reply(to_honest, src_node_id=honest))

    threading.Thread(target=attack_when_asked, daemon=True).start()
    replies = list(grid.send_and_receive([to_honest, to_attacker]))
    assert _answers(replies) == {honest: "hello", attacker: ErrorCode.NODE_UNAVAILABLE}
    assert list(grid.get_node_ids()) == [honest]
    sock.close()


def test_what_is_not_a_client_is_not_a_node(grid: RelayGrid) -> None:
    with socket.create_connection(_endpoint(grid)) as sock:
        send_frame(sock, b"GET / HTTP/1.1")
        with pytest.raises(ConnectionError):
            recv_frame(sock, 4096)
    assert list(grid.get_node_ids()) == []


def test_a_client_that_never_answers_is_dropped_at_the_timeout(grid: RelayGrid) -> None:
    sock, node = _raw_client(grid)
    _until(lambda: node in grid.get_node_ids())
    started = time.monotonic()
    assert list(grid.send_and_receive([_ask(node, "hello")], timeout=0.5)) == []
    assert 0.5 <= time.monotonic() - started < 5
    # it is a dropout: disconnected, so that a stale message never reaches it
    _until(lambda: node not in grid.get_node_ids())
    with pytest.raises(ConnectionError):
        while True:
            recv_frame(sock, 1 << 20)
    sock.close()


def test_a_reply_the_check_refuses_is_its_clients_failure_alone() -> None:
    def no_secrets(sent: Message, reply: Message) -> None:
        if reply.content.config_records["answer"]["text"] == "secret":
            raise ValueError("no secrets")

    with RelayGrid(f"127.0.0.1:{free_port()}", timeout=30, check=no_secrets) as grid:
        _join(grid), _join(grid)
        a, b = sorted(grid.get_node_ids())
        replies = list(grid.send_and_receive([_ask(a, "secret"), _ask(b, "public")]))
        assert _answers(replies) == {a: ErrorCode.NODE_UNAVAILABLE, b: "public"}
        assert "no secrets" in next(r for r in replies if r.has_error()).error.reason
        assert list(grid.get_node_ids()) == [b]


def test_over_tls_with_the_servers_certificates(tmp_path: Path) -> None:
    tls = certificates(tmp_path / "certs")
    context = server_tls(str(tls / "server.pem"), str(tls / "server.key"))
    with RelayGrid(f"127.0.0.1:{free_port()}", tls=context, timeout=30) as grid:
        _join(grid, tls=client_tls(str(tls / "ca.crt")))
        (node,) = grid.get_node_ids()
        (reply,) = grid.send_and_receive([_ask(node, "private")])
        assert reply.content.config_records["answer"]["text"] == "private"
        # a client trusting another authority refuses the server
        other = certificates(tmp_path / "other")
        with pytest.raises(LeptonError, match="TLS with the federation's server"):
            connect(_address(grid), tls=client_tls(str(other / "ca.crt")), timeout=5)
        # and one speaking in the clear is not a node
        with pytest.raises(ConnectionError), socket.create_connection(_endpoint(grid)) as plain:
            send_frame(plain, HELLO)
            recv_frame(plain, 4096)
        assert list(grid.get_node_ids()) == [node]


def test_a_port_in_use_is_refused_in_one_line(grid: RelayGrid) -> None:
    with pytest.raises(LeptonError, match="cannot serve the federation at .*in use"):
        RelayGrid(_address(grid))


def test_a_server_that_is_not_a_relay_is_named_in_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer_like_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_like_http, daemon=True).start()
        with pytest.raises(LeptonError, match="is it a `lepton fl server --secure-aggregation`"):
            connect(f"127.0.0.1:{port}", tls=None, timeout=5)
