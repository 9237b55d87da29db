"""Connection limits: uvicorn's httptools protocol with bounds on what an unauthenticated client
may make the server hold or parse.

uvicorn's httptools protocol bounds nothing before the app sees a request: a header block of any
size is parsed (httptools joins a header value that spans reads by ``+=``, so the work grows with
the square of its size), a connection may send its head or its body as slowly as it likes, and
connections are never counted. :class:`LimitedHttpToolsProtocol` adds, per connection:

* **Head size** (``ISSUER_MAX_HEADER_BYTES``): the request line and header fields are counted as
  they arrive, before the parser sees them; at most that many bytes are ever fed to it while a
  head is incomplete. Over it: ``431`` and the connection is closed (RFC 6585 5).
* **Header fields** (``ISSUER_MAX_HEADER_FIELDS``): more fields than that: ``431``.
* **Trailers and chunk framing** of a body share the head's byte budget (bytes received in the
  body beyond the body's own bytes); over it the connection is closed.
* **Head timeout** (``ISSUER_HEADER_TIMEOUT``): from the connection's opening (or the first byte
  of a later request on a kept-alive connection) until the head is complete. On expiry: ``408``
  (RFC 9110 15.5.9) if part of a head arrived, and the connection is closed.
* **Body timeout** (``ISSUER_BODY_TIMEOUT``): from the end of the head until the body is complete;
  on expiry the connection is closed (the app sees a disconnect).
* **Connections** (``ISSUER_MAX_CONNECTIONS``): beyond that many open connections in the process,
  a new one gets ``503`` with ``Retry-After`` and is closed before anything is read from it.

A response that completes before its request's body was read (a 413, for instance) ends the
connection instead of reading the rest. After a refusal the connection is closed gracefully (our
answer, then FIN), and what the client still sends is discarded, up to :data:`LINGER_BYTES` or
:data:`LINGER_SECONDS`, so that it can read the answer before the socket is reset.

The hot path (a whole request in one read) arms no timer: a phase's timer is armed only once it
spans more than one read. The body size stays Litestar's (``ISSUER_MAX_BODY_BYTES``, 413).

**One write per answer** (issue 12): every write of a connection goes through
:class:`OneWrite`, which sends what was written in one step of the event loop in one write
(uvicorn's ``send`` writes a response's head and its body apart: two system calls and two TCP
segments per answer, one of them saved here).

**Answers given at once** (issue 12): a request the app can answer without waiting
(:meth:`issuer.http.direct.IssuerApp.answer_now`: ``GET /.well-known/jwks.json``) is answered
from the parser's head callback, before uvicorn builds a request cycle and without the app's task,
when its path is one of those as sent (no query, no escapes), it has no body, nothing is in flight
before it on the connection, writes are not paused and uvicorn's own access log is off; the bytes
are those uvicorn's ``send`` writes for the same answer (``tests/http/test_answer_now.py``
compares them with the routed app's over real sockets). Anything else goes to the app as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from issuer.settings import Settings, load

if TYPE_CHECKING:
    from litestar.types import Scope

    from issuer.http.direct import Answer

__all__ = [
    "COALESCE_BYTES",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "ConnectionLimits",
    "LimitedHttpToolsProtocol",
    "OneWrite",
]

LINGER_BYTES = 256 * 1024  # what is still read (and dropped) after a refusal, before the socket is reset
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    max_header_fields: int
    header_timeout: float
    body_timeout: float
    max_connections: int
    retry_after: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_fields=settings.max_header_fields,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_connections=settings.max_connections,
            retry_after=settings.retry_after,
        )


def _response(status: int, text: str, *extra: bytes) -> bytes:
    body = text.encode("ascii")
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"cache-control: no-store\r\n",
            *extra,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in headers)


def _answerer(app: Any) -> tuple[Callable[[Scope], Answer | None] | None, frozenset[tuple[bytes, bytes]]]:
    """The app's ``answer_now`` and the (path, method) it answers, as raw bytes, through uvicorn's
    proxy-headers middleware (which changes only the client address and scheme, which such an
    answer does not read); nothing for any other app."""
    if isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    answer_now = getattr(app, "answer_now", None)
    paths: frozenset[tuple[str, str]] = getattr(app, "now_paths", frozenset())
    if not callable(answer_now) or not paths:
        return None, frozenset()
    return answer_now, frozenset((path.encode("ascii"), method.encode("ascii")) for path, method in paths)


#: What a connection may hold back for one write before it writes at once (a streamed answer
#: written in one step of the loop goes out in pieces of this size, under uvicorn's flow control).
COALESCE_BYTES = 64 * 1024


class OneWrite:
    """A connection's transport whose writes made in one step of the event loop leave in one
    write: a response's head and body, written apart by uvicorn's ``send``, become one system
    call and one TCP segment. The bytes are held until the response is complete (the protocol's
    ``on_response_complete`` flushes), the loop's next turn, :data:`COALESCE_BYTES` held, or a
    close or half-close, whichever comes first, so their order and content are those written;
    everything but writing is the transport's own."""

    __slots__ = ("_held", "_loop", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._held is None:
            self._held = [data]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)
            self._size += len(data)
        if self._size >= COALESCE_BYTES:
            self.flush()

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self.transport.is_closing():
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:  # asked on every read: not through __getattr__
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # abort, can_write_eof, get_extra_info, ...
        return getattr(self.transport, name)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the status is on the protocol."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of the module docstring.

    ``limits`` is set by ``issuer serve`` (:meth:`configure`); a worker process that uvicorn
    spawns reads it from the environment at its first connection, as its app factory does.
    """

    limits: ClassVar[ConnectionLimits | None] = None

    @classmethod
    def configure(cls, settings: Settings) -> type[LimitedHttpToolsProtocol]:
        cls.limits = ConnectionLimits.from_settings(settings)
        return cls

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            cls.limits = ConnectionLimits.from_settings(load())
        self._limits: ConnectionLimits = cls.limits
        self._in_head = True  # between requests, or reading one's head
        self._head_bytes = 0  # of the current head, counted before the parser sees them
        self._body_fed = 0  # bytes received while in the body phase
        self._body_bytes = 0  # of them, the body's own (the rest is chunk framing and trailers)
        self._timer: asyncio.TimerHandle | None = None
        self._refusal: int | None = None
        self._linger: int | None = None  # bytes still to drop after a refusal; None: not lingering
        self._answered = False  # the current request was answered at once (_at_once)
        self._answer_now, self._now_paths = (
            _answerer(self.app) if not self.access_log else (None, frozenset())
        )
        if self.root_path:
            self._now_paths = frozenset()  # paths are matched as sent

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every write of the connection (uvicorn's cycles, refusals, answers at once) through one
        # OneWrite, so that what is held back never goes out after a later write.
        self.transport = OneWrite(transport, self.loop)  # type: ignore[assignment]
        limits = self._limits
        if len(self.connections) > limits.max_connections:
            self.logger.warning("Connection refused: ISSUER_MAX_CONNECTIONS=%d.", limits.max_connections)
            self.transport.write(
                _response(503, "Service Unavailable", b"retry-after: %d\r\n" % limits.retry_after)
            )
            self.transport.close()
            return
        self._arm(limits.header_timeout)  # the first head, counted from the connection's opening

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:
            self._linger -= len(data)
            if self._linger < 0:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        max_head = self._limits.max_header_bytes
        while True:
            if self._in_head:
                room = max_head - self._head_bytes
                if len(data) > room:
                    # Feed only what the head may still hold: if it is not complete by then, refuse.
                    if not self._feed(data[:room]):
                        return
                    if self._in_head:
                        self._refuse(431, "Request Header Fields Too Large")
                        return
                    data = data[room:]
                    continue
                self._head_bytes += len(data)
            else:
                self._body_fed += len(data)
            if not self._feed(data):
                return
            break
        if self._in_head:
            if self._head_bytes and self._timer is None:
                self._arm(self._limits.header_timeout)  # a head that spans reads
        elif self._body_fed - self._body_bytes > max_head:
            self._abort()  # chunk framing and trailers beyond the head's budget
        elif self._timer is None:
            self._arm(self._limits.body_timeout)  # a body that spans reads

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the connection is being closed (refused or a parse error)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal == 431:
                self._refuse(431, "Request Header Fields Too Large")
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self._disarm()
                self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return not self.transport.is_closing()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the websocket protocol takes the transport over
        super().handle_websocket_upgrade()

    # ------------------------------------------------------------------ parser callbacks

    def on_headers_complete(self) -> None:
        if self._timer is not None:
            self._disarm()
        if len(self.headers) > self._limits.max_header_fields:
            self._refusal = 431
            raise _Refused
        self._in_head = False
        self._body_fed = self._body_bytes = 0
        if (self.url, self.parser.get_method()) in self._now_paths and self._at_once():
            return  # answered (one set lookup for every other request)
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._timer is not None:
            self._disarm()
        self._in_head = True
        self._head_bytes = 0
        if self._answered:  # answered at once: uvicorn has no cycle for it
            self._answered = False
            return
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        # Answered before its body was read (413, ...): do not read the rest, end the connection.
        # (With requests queued behind it, the body being read is a later request's.)
        answered_early = not self._in_head and not self.pipeline
        self.transport.flush()  # type: ignore[attr-defined]  # the answer is whole: it leaves now
        HttpToolsProtocol.on_response_complete(self)
        if answered_early and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self._disarm()
            self._start_linger()

    # ------------------------------------------------------------------ answers given at once

    def _at_once(self) -> bool:
        """Answer the request whose head just ended here, without the app's task and before
        uvicorn builds its request cycle, when the app has the answer at once
        (:meth:`issuer.http.direct.IssuerApp.answer_now`) and it can be written whole now: one
        of the app's (path, method) for that, the path as sent (no query, no escapes; the caller
        looked it up), without a body, with no response in flight before it on the connection and
        writes not paused. The bytes are those uvicorn's ``send`` writes for the same answer: its
        default headers (``date``) first, the answer's headers as given, ``connection: close``
        when the connection does not stay open (HTTP/1.0, ``Connection: close``); then the body,
        in the same write (uvicorn writes the two apart: one system call and one TCP segment
        more per answer)."""
        parser = self.parser
        cycle = self.cycle
        if (
            (cycle is not None and not cycle.response_complete)
            or self.flow.write_paused
            or parser.should_upgrade()
            or _has_body(self.headers)
        ):
            return False
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")  # what the caller looked up
        scope["path"] = self.url.decode("ascii")
        answer = self._answer_now(scope)  # type: ignore[misc, arg-type]
        if answer is None:
            return False
        status, headers, body = answer
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        content = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            content += (name, b": ", value, b"\r\n")
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)  # head and body in one write: one send, one segment
        self._in_head = True  # the request is complete: no body follows its head
        self._head_bytes = 0
        self._answered = True
        self.transport.write(b"".join(content))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()
        return True

    # ------------------------------------------------------------------ refusals and timers

    def _in_flight(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self, status: int, text: str) -> None:
        """Answer ``status`` (unless a response is being written) and close the connection."""
        self._disarm()
        if self._in_flight():
            self._abort()
            return
        self.logger.warning("Request refused: %d %s.", status, text)
        self.transport.write(_response(status, text))
        self._start_linger()

    def _start_linger(self) -> None:
        self._linger = LINGER_BYTES
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads our answer, then EOF
        self._arm(LINGER_SECONDS)

    def _abort(self) -> None:
        """Close now; a request the app is still reading sees a disconnect."""
        self._disarm()
        if self._in_flight():
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._linger is not None:
            self.transport.close()
        elif self._in_head and self._head_bytes and not self._in_flight():
            self._refuse(408, "Request Timeout")
        else:
            self._abort()  # an idle new connection, a stalled body, or a pipelined head under a response
