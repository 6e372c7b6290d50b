"""Who may use the dashboard: the bearer token for API clients, and for browsers a session cookie
(HttpOnly, SameSite=Strict) given for that token, each session with its own CSRF token for the forms."""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "lepton_session"
# sessions live in this process only: a restart signs everyone out, and nothing secret is written to disk
MAX_SESSIONS = 10_000


class Sessions:
    """The browser sessions of one dashboard process, each a random id mapped to its CSRF token."""

    def __init__(self, token: str | None) -> None:
        self._expected = token.encode() if token else None
        self._csrf: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Return whether a token is needed (else anyone who can reach the port is let in)."""
        return self._expected is not None

    def token_ok(self, given: str) -> bool:
        """Return whether `given` is the token (compared in constant time)."""
        return self._expected is None or hmac.compare_digest(given.encode(), self._expected)

    def bearer_ok(self, request: Request) -> bool:
        """Return whether the request carries `Authorization: Bearer TOKEN`."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._expected is not None and self.token_ok(given)

    def start(self) -> str:
        """Open a session; return its id (the oldest session goes when there are too many)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._csrf[sid] = secrets.token_urlsafe(32)
            while len(self._csrf) > MAX_SESSIONS:
                self._csrf.popitem(last=False)
        return sid

    def end(self, request: Request) -> None:
        """Close the request's session, if it has one."""
        with self._lock:
            self._csrf.pop(request.cookies.get(COOKIE, ""), None)

    def of(self, request: Request) -> str | None:
        """Return the request's session id when it is a live one."""
        sid = request.cookies.get(COOKIE, "")
        with self._lock:
            return sid if sid in self._csrf else None

    def csrf(self, sid: str) -> str:
        """Return the CSRF token a session's forms must send back."""
        with self._lock:
            return self._csrf.get(sid, "")

    def csrf_ok(self, request: Request, given: str) -> bool:
        """Return whether `given` is the CSRF token of the request's session (compared in constant time)."""
        sid = self.of(request)
        expected = self.csrf(sid) if sid else ""
        return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())

    @staticmethod
    def set_cookie(response: Response, sid: str, secure: bool) -> None:
        """Give the browser its session: not readable by scripts, never sent by another site."""
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=secure, path="/")
