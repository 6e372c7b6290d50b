"""uvicorn's httptools protocol, with the writes of one event-loop turn sent together and a deadline for
a request's headers.

uvicorn writes a response's head and its body in two `send` calls. On loopback and in VMs a send
costs about the same whatever its size (the kernel wakes the reader; uvloop holds the GIL all the
while), so a small JSON answer paid twice: here the first write of a turn is held and goes out
with the next one, or at the end of the turn when no other comes.

uvicorn gives a client all the time it wants to send a request's headers (its keep-alive timer stops at
the first byte), so connections that trickle or stall would pile up for good: here a connection whose
headers are not all in within HEADER_TIMEOUT_S of their first byte, or of connecting, is closed."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any, cast

# as long as a client on a slow link needs to send a few kilobytes of headers
HEADER_TIMEOUT_S = 10.0


class _Coalescing:
    """A transport whose writes made in one event-loop turn leave in one send."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport, self._held = transport, b""
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        """Hold the turn's first write; send it together with the second (or at the end of the turn)."""
        if self._held:
            data, self._held = self._held + data, b""
            self._transport.write(data)
        elif data:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is held."""
        if self._held:
            data, self._held = self._held, b""
            if not self._transport.is_closing():
                self._transport.write(data)

    def write_eof(self) -> None:
        """Send what is held, then end the writing side."""
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Send what is held, then close (after the transport's own buffer drains)."""
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _httptools_protocol() -> Any:
    """Return uvicorn's httptools protocol class, or None without httptools (uvicorn then uses h11)."""
    try:
        return importlib.import_module("uvicorn.protocols.http.httptools_impl").HttpToolsProtocol
    except ImportError:
        return None


# A class at module level: uvicorn's workers receive it pickled.
_HTTPTOOLS: Any = _httptools_protocol()


def protocol() -> Any:
    """Return the HTTP protocol for uvicorn's `http=` option: ours on httptools, else uvicorn's choice."""
    return "auto" if _HTTPTOOLS is None else CoalescingHttpToolsProtocol


if _HTTPTOOLS is not None:

    class CoalescingHttpToolsProtocol(_HTTPTOOLS):
        """uvicorn's httptools protocol on a transport that sends each turn's writes together."""

        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # _Coalescing stands in for the transport: what it does not hold it passes to the real one
            super().connection_made(cast(asyncio.Transport, _Coalescing(cast(asyncio.Transport, transport))))
            self._await_headers()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._await_headers()

        def on_headers_complete(self) -> None:
            self._headers_in()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_in()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            """Close the connection unless a request's headers are all in within HEADER_TIMEOUT_S."""
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self.transport.close)

        def _headers_in(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None
