"""The observing edge: a request id, latency and status metrics, and one access line per request;
and ``GET /metrics``.

:func:`observe` is a plain ASGI middleware around every route (Litestar runs it for matched routes
only, so unknown paths add no metric series): it takes the request id from an incoming
``X-Request-ID`` when that is sane (1-100 of ``A-Z a-z 0-9 . _ : -``, and not shaped like a
credential), else makes one; echoes it in the response; makes it (and the client id, once the
client authenticated) part of every log line of the request
(:mod:`issuer.observability.logs`); and records the latency and the status in the runtime's
:class:`~issuer.observability.metrics.Metrics`, before it passes the last chunk of the body on
(so a client holding its answer finds it counted). It reads no header but ``X-Request-ID`` and
no body.

``GET /metrics`` answers only a request bearing ``Authorization: Bearer <ISSUER_METRICS_TOKEN>``
(compared in constant time), or anyone when ``ISSUER_METRICS_PUBLIC=true``; otherwise it is the
same 404 as an unknown path, so its existence is not advertised.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import NotFoundException
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from issuer.observability.logs import CREDENTIAL_SHAPES, RequestContext, current
from issuer.observability.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from issuer.observability.metrics import Metrics

__all__ = ["Exchange", "metrics", "observe"]

log = logging.getLogger("issuer.access")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,100}")
# Generated ids: 12 random hex digits per process, then a counter: unique without a syscall per request.
_ORIGIN = secrets.token_hex(6)
_SEQUENCE = itertools.count(1)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            if _SANE_ID.fullmatch(value):
                text = value.decode("ascii")
                if not CREDENTIAL_SHAPES.search(text):  # a secret sent as an id is not logged
                    return text
            break
    return f"{_ORIGIN}{next(_SEQUENCE):012x}"


class Exchange:
    """One request as the edge observes it: its request id (and the log context that carries it),
    its status, and whether it was counted. Used by :func:`observe` around Litestar's routes, and
    by :mod:`issuer.http.direct` without a send wrapper.

    Made when the request arrives (the context is current from then on); :meth:`answered` with
    the response's status and headers, :meth:`count` before the last byte of the body leaves,
    :meth:`close` when the request is over (counted then if it never was, logged, context reset).
    """

    __slots__ = ("context", "elapsed", "header", "method", "metrics", "path", "started", "status", "token")

    def __init__(self, scope: HTTPScope, metrics: Metrics | None) -> None:
        self.started = time.perf_counter()
        self.path = scope["path"]
        self.method = scope["method"]
        self.metrics = metrics
        self.context = RequestContext(_request_id(scope))
        self.token = current.set(self.context)
        self.header = (b"x-request-id", self.context.request_id.encode("ascii"))
        self.status = 500
        self.elapsed: float | None = None  # set once the request is counted

    def answered(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The response starts: its status noted, its headers with the request id added."""
        self.status = status
        return [*headers, self.header]

    def count(self) -> None:
        self.elapsed = time.perf_counter() - self.started
        if self.metrics is not None:
            self.metrics.observe(self.path, self.context.grant or "", self.status, self.elapsed)

    def close(self) -> None:
        if self.elapsed is None:  # no complete response (an error, a disconnect)
            self.count()
        if log.isEnabledFor(logging.INFO):
            extra: dict[str, Any] = {
                "method": self.method,
                "path": self.path,
                "status": self.status,
                "duration_ms": round((self.elapsed or 0.0) * 1000, 3),
            }
            if self.context.grant:
                extra["grant"] = self.context.grant
            log.info("request", extra=extra)
        current.reset(self.token)


def observe(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        runtime = getattr(scope["app"].state, "runtime", None)
        exchange = Exchange(scope, runtime.metrics if runtime is not None else None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = exchange.answered(message["status"], message.get("headers", ()))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # counted before the last byte leaves: a client that has its answer finds it
                # counted, whichever worker answers its next scrape
                exchange.count()
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            exchange.close()

    return middleware


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    runtime = request.app.state.runtime
    settings = runtime.settings
    if not settings.metrics_public:
        expected = settings.metrics_token
        presented = request.headers.get("authorization", "")
        if not expected or not hmac.compare_digest(presented.encode(), f"Bearer {expected}".encode()):
            raise NotFoundException()
    body = await runtime.metrics.render()
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
