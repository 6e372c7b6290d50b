"""Flower's messages between a federation's server and its clients, one TCP connection a client (TLS with
certificates): how `lepton fl server --secure-aggregation` carries Flower's SecAgg+ workflow to each
client's `secaggplus_mod`.

Flower's own engine for its Message API (a SuperLink, a SuperNode a client) stores each message, announces
it, has it pulled over HTTP and runs it in a fresh task process, polling at each step
(docs/design/secure-aggregation.md). Here the server's grid (`RelayGrid`, a Flower `Grid`) writes each
message to its client's connection and reads the reply from it, and the client, one long-lived process
(`serve_client`), runs its `ClientApp` on it. A client that leaves is known as soon as it is waited for (its
connection closes): its messages get Flower's NODE_UNAVAILABLE reply, as a SuperLink gives them.

A frame is an 8-byte length, then the bytes of Flower's own protobuf `Message`. A client opens with `HELLO`;
the server answers with the client's node id (JSON). Then the server sends one message at a time and reads
one reply: anything else (not a message, too long, a reply to another message or in another node's name,
content the server's `check` refuses, no answer within the wait) ends the client's connection, and the
workflow counts it as that client's failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from lepton_ai.errors import LeptonError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from flwr.clientapp import ClientApp

HELLO = b"lepton-fl-relay/1"
_LENGTH = struct.Struct("!Q")
# a client has this long to open TLS and say hello
HANDSHAKE_S = 10.0
logger = logging.getLogger(__name__)


def send_frame(sock: socket.socket, data: bytes) -> None:
    """Write one frame."""
    sock.sendall(_LENGTH.pack(len(data)))
    sock.sendall(data)


def recv_frame(sock: socket.socket, limit: int) -> bytes:
    """Read one frame of at most `limit` bytes; raise ConnectionError on a closed connection or a longer
    frame."""
    (size,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
    if size > limit:
        raise ConnectionError(f"a frame of {size} bytes, over the limit of {limit}")
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    # grown as the bytes come, not allocated at the size a peer declares
    buffer = bytearray()
    while len(buffer) < size:
        chunk = sock.recv(min(size - len(buffer), 1 << 20))
        if not chunk:
            raise ConnectionError("the connection closed")
        buffer += chunk
    return bytes(buffer)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _quick(sock: socket.socket) -> None:
    # small frames (keys, shares) go out at once, not after the last one's acknowledgement
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """Return the server's TLS context from its certificate and private key files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_tls(ca: str) -> ssl.SSLContext:
    """Return a client's TLS context trusting the CA certificate file `ca`."""
    return ssl.create_default_context(cafile=ca)


# -- the server ---------------------------------------------------------------------------------


@dataclass
class _Node:
    """A connected client: its connection, and the messages waiting to be sent to it."""

    node_id: int
    sock: socket.socket
    outbox: queue.SimpleQueue[Message | None] = field(default_factory=queue.SimpleQueue)


# what a grid asks of a reply beyond its envelope: raise ValueError on one the workflow could not use
ReplyCheck = Callable[[Message, Message], None]


class RelayGrid(Grid):
    """A Flower `Grid` serving at HOST:PORT, each client that connects a node (see the module)."""

    def __init__(
        self,
        address: str,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float | None = None,
        max_frame: int = 1 << 30,
        check: ReplyCheck | None = None,
        run_id: int = 1,
    ) -> None:
        # `timeout` bounds a `send_and_receive` that gives none; `max_frame` is the longest reply, in bytes
        host, port = _split(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, port), family=family)
        except OSError as e:
            raise LeptonError(f"cannot serve the federation at {address}: {e.strerror or e}") from None
        self.tls, self.timeout, self.max_frame, self.check = tls, timeout, max_frame, check
        self._run = Run.create_empty(run_id)
        # the identity Flower stamps on the messages this process creates, as its own `start_grid` sets it
        _identify(run_id, SUPERLINK_NODE_ID)
        self._nodes: dict[int, _Node] = {}
        # messages sent and not yet pulled, and the replies to them, by the sent message's id
        self._sent: dict[str, Message] = {}
        self._replies: dict[str, Message] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()

    def __enter__(self) -> RelayGrid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and close every client's connection (the clients then leave)."""
        self._listener.close()
        with self._changed:
            nodes = list(self._nodes.values())
        for node in nodes:
            node.outbox.put(None)
            _wake(node.sock)

    # -- Flower's Grid

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        with self._changed:
            return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex
            with self._changed:
                self._sent[message.metadata.message_id] = message
                node = self._nodes.get(message.metadata.dst_node_id)
                if node is None:
                    self._unavailable(message, "the client is not connected")
                else:
                    node.outbox.put(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        with self._changed:
            replies = [self._replies.pop(i) for i in message_ids if i in self._replies]
            for reply in replies:
                self._sent.pop(reply.metadata.reply_to_message_id, None)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        wait = self.timeout if timeout is None else timeout
        with self._changed:
            self._changed.wait_for(lambda: all(i in self._replies for i in ids), timeout=wait)
            late = {
                self._sent[i].metadata.dst_node_id for i in ids if i in self._sent and i not in self._replies
            }
            replies = [self._replies.pop(i) for i in ids if i in self._replies]
            for i in ids:
                self._sent.pop(i, None)
            stragglers = [self._nodes[n] for n in late if n in self._nodes]
        # a client that has not answered in time is a dropout: it leaves, and its stale messages with it
        for node in stragglers:
            _wake(node.sock)
        return replies

    # -- connections

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._admit, args=(sock,), daemon=True, name="relay-node").start()

    def _admit(self, sock: socket.socket) -> None:
        """Greet a new connection and, if it is a client, serve it until it leaves."""
        try:
            _quick(sock)
            sock.settimeout(HANDSHAKE_S)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            if recv_frame(sock, len(HELLO)) != HELLO:
                raise ConnectionError("not a lepton federation client")
            # Flower's server is node 1
            node = _Node(secrets.randbelow(2**62) + 2, sock)
            send_frame(sock, json.dumps({"node_id": node.node_id, "run_id": self._run.run_id}).encode())
            sock.settimeout(None)
        except OSError as e:
            logger.info("refused a connection: %s", e)
            _shut(sock)
            return
        with self._changed:
            self._nodes[node.node_id] = node
            self._changed.notify_all()
        self._serve(node)

    def _serve(self, node: _Node) -> None:
        """Send the node its messages, one at a time, each followed by its reply, until it leaves or breaks
        the protocol; then its waiting messages fail. (One thread a connection: TLS cannot read and write
        one connection from two.)"""
        try:
            while (message := node.outbox.get()) is not None:
                with self._changed:
                    # its wait is over: not sent at all
                    if message.metadata.message_id not in self._sent:
                        continue
                send_frame(node.sock, message_to_proto(message).SerializeToString())
                reply = message_from_proto(ProtoMessage.FromString(recv_frame(node.sock, self.max_frame)))
                self._receive(node, message, reply)
            reason = "the federation ended"
        except Exception as e:
            reason = str(e) or type(e).__name__
        with self._changed:
            del self._nodes[node.node_id]
            for message in list(self._sent.values()):
                if message.metadata.dst_node_id == node.node_id:
                    self._unavailable(message, f"the client left: {reason}")
        _shut(node.sock)

    def _receive(self, node: _Node, sent: Message, reply: Message) -> None:
        """Keep `reply` as the answer to `sent`; raise if it is not one the workflow can take from `node`."""
        asked = sent.metadata.message_id
        if reply.metadata.reply_to_message_id != asked or reply.metadata.src_node_id != node.node_id:
            raise ConnectionError("a reply to another message, or in another client's name")
        if not reply.has_error() and self.check is not None:
            self.check(sent, reply)
        with self._changed:
            if asked in self._sent:
                self._replies[asked] = reply
                self._changed.notify_all()

    def _unavailable(self, message: Message, reason: str) -> None:
        """Answer `message` for its client with Flower's NODE_UNAVAILABLE (the caller holds the lock)."""
        if message.metadata.message_id not in self._replies:
            error = Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason)
            self._replies[message.metadata.message_id] = Message(error, reply_to=message)
            self._changed.notify_all()


def _identify(run_id: int, node_id: int) -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, node_id


def _wake(sock: socket.socket) -> None:
    """End the connection under the thread that reads it, which then sees it closed and closes it."""
    with contextlib.suppress(OSError):
        # the plain socket's shutdown, even under TLS: no TLS call from a second thread
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _shut(sock: socket.socket) -> None:
    _wake(sock)
    sock.close()


# -- the client ---------------------------------------------------------------------------------


class Joined(NamedTuple):
    """A client's greeted connection to the federation's server, and who the server says it is."""

    sock: socket.socket
    run_id: int
    node_id: int


def connect(address: str, *, tls: ssl.SSLContext | None, timeout: float) -> Joined:
    """Return a greeted connection to the federation's server at HOST:PORT, trying for `timeout` seconds."""
    host, port = _split(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=HANDSHAKE_S)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                raise LeptonError(f"could not reach the federation's server at {address}: {e}") from None
            time.sleep(0.2)
    try:
        _quick(sock)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        send_frame(sock, HELLO)
        hello = json.loads(recv_frame(sock, 4096))
        joined = Joined(sock, int(hello["run_id"]), int(hello["node_id"]))
    except ssl.SSLError as e:
        sock.close()
        raise LeptonError(f"TLS with the federation's server at {address} failed: {e}") from None
    except (OSError, ValueError, KeyError, TypeError):
        sock.close()
        raise LeptonError(
            f"the server at {address} did not greet this client as a secure-aggregation federation does: "
            "is it a `lepton fl server --secure-aggregation`?"
        ) from None
    sock.settimeout(None)
    return joined


def serve_client(
    joined: Joined, app: ClientApp, node_config: dict[str, Any], *, max_frame: int = (1 << 31) - 1
) -> int:
    """Answer the server's messages on the connection `joined` with `app` until the server closes it;
    return the number of messages answered."""
    context = Context(joined.run_id, joined.node_id, node_config, RecordDict(), {})
    _identify(joined.run_id, joined.node_id)
    answered = 0
    while True:
        try:
            frame = recv_frame(joined.sock, max_frame)
        except OSError:
            # the server has ended the federation (or dropped this client)
            return answered
        try:
            message = message_from_proto(ProtoMessage.FromString(frame))
        except Exception:
            raise LeptonError("the server sent something that is not a Flower message") from None
        logger.info("message %d: %s", answered + 1, message.metadata.message_type)
        reply = message_to_proto(_answer(app, message, context)).SerializeToString()
        try:
            send_frame(joined.sock, reply)
        except OSError:
            return answered
        answered += 1


def _answer(app: ClientApp, message: Message, context: Context) -> Message:
    """Return `app`'s reply to `message`, or an error reply naming what it raised."""
    try:
        return app(message=message, context=context)
    except Exception as e:
        logger.exception("the client app failed")
        error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(e).__name__}: {e}")
        return Message(error, reply_to=message)
