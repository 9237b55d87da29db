"""The hot routes answered below Litestar's routing: ``POST /token`` and ``GET
/.well-known/jwks.json``, exactly these paths and methods (issue 12).

Litestar's route resolution, its connection and signature objects and its response path cost
about 80 us of CPU per request on this stack (``bench/README.md``, "Issue 12"): as much as an
ES256 signature, and more than everything a JWKS answer needs. :class:`IssuerApp` is the Litestar
app with one dictionary lookup in front: a request for one of :data:`DIRECT` paths with its method
goes to a plain ASGI callable; everything else, these paths' other methods (``OPTIONS``, the
405s), ``/token/`` and the lifespan included, is Litestar's as before.

A direct route answers exactly as its Litestar handler would, byte for byte but for what no client
can tell apart (``tests/http/test_direct.py`` compares both on every kind of answer):

* the same code behind it: :func:`issuer.http.token.issue` and
  :func:`issuer.http.wellknown.jwks_answer`, also called by the Litestar handlers;
* the same edge: the :class:`issuer.http.observe.Exchange` that :func:`~issuer.http.observe.observe`
  keeps for a routed request (request id, metrics, access line), and the app's ``before_send``
  hooks (``X-Content-Type-Options``, CORS) on its response's start, in one pass without the two
  send wrappers the routed path stacks (the request id first, then the hooks' headers, as there);
* the same refusals: the body limit (``ISSUER_MAX_BODY_BYTES``, 413 before reading when the
  ``Content-Length`` says so, else once the bytes exceed it), 415 before the body is read, every
  :class:`~issuer.errors.IssuerError` through :func:`~issuer.http.responses.error_parts`, and an
  unexpected exception logged with its traceback and answered 500 ``server_error``;
* the same framing: Litestar's header names, order and ``Content-Length``.

A client that disconnects before its body is complete gets no answer (it cannot read one); it is
counted as a 500, as before, without the traceback Litestar logged for it.

Under ``issuer serve`` the paths of :data:`NOW` (the JWKS) are answered one step earlier still:
the HTTP protocol (:mod:`issuer.http.limits`) asks :meth:`IssuerApp.answer_now` from its parser
callback and writes the answer itself, without a request cycle or a task; the direct route stays
for what the protocol leaves to the app and for any other ASGI server
(``tests/http/test_answer_now.py`` holds both to the routed app's bytes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Litestar
from litestar.types import HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send

from issuer.errors import IssuerError
from issuer.http.cors import PUBLIC_DOCUMENTS, cors_headers, document_headers
from issuer.http.forms import check_content_type, parse_form
from issuer.http.observe import Exchange
from issuer.http.responses import (
    COMMON_HEADERS,
    NO_STORE,
    common_headers,
    encode_json,
    error_parts,
    http_error_parts,
    internal_error_parts,
)
from issuer.http.token import issue
from issuer.http.wellknown import etag_matches, jwks_answer
from issuer.runtime import Runtime

__all__ = ["DIRECT", "NOW", "Answer", "IssuerApp"]

_JSON = (b"content-type", b"application/json")


class _Disconnected(Exception):
    """The client went away before its request body was complete."""


class _TooLarge(Exception):
    """The request body exceeds ``ISSUER_MAX_BODY_BYTES``."""


Parts = tuple[int, Mapping[str, str], bytes | None]  # status, headers, body (None: no content)
#: An answer as written: status, the headers encoded, the body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _headers(fields: Mapping[str, str], body: bytes | None) -> list[tuple[bytes, bytes]]:
    """A response's headers as Litestar's ``Response`` encodes them: names lower-cased, values
    latin-1, then the JSON content type and length; a ``None`` body (a 304) gets no content headers."""
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fields.items()]
    if body is not None:
        headers += (_JSON, (b"content-length", str(len(body)).encode("ascii")))
    return headers


async def _body(receive: Receive, announced: int | None, limit: int) -> bytes:
    """The whole request body, or :class:`_TooLarge` / :class:`_Disconnected` (Litestar's
    ``Request.body`` with ``request_max_body_size``: the announced length first, then the bytes)."""
    if announced is not None and announced > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                received += len(chunk)
                if received > limit:
                    raise _TooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise _Disconnected


async def token(runtime: Runtime, scope: Scope, receive: Receive) -> Parts | None:
    """``POST /token``: :func:`issuer.http.token.issue` on the form."""
    content_type = authorization = length = None
    for name, value in scope["headers"]:  # the first of each, as Litestar's Headers.get
        if name == b"content-type":
            content_type = content_type or value.decode("latin-1")
        elif name == b"authorization":
            authorization = authorization or value.decode("latin-1")
        elif name == b"content-length":
            length = length or value
    client = scope.get("client")
    parts: Parts
    try:
        check_content_type(content_type)  # before the body is read
        announced = int(length) if length and length.isdigit() else None  # httptools checked its syntax
        body = await _body(receive, announced, runtime.settings.max_body_bytes)
        form = parse_form(content_type, body)
        result = await issue(runtime, form, authorization, client[0] if client else None)
        parts = 200, NO_STORE, encode_json(result)
    except IssuerError as error:
        parts = error_parts(error, scope["path"], runtime.settings.retry_after)
    except _TooLarge:
        parts = http_error_parts(413)
    except _Disconnected:
        return None
    except Exception as error:  # a bug: never a stack trace to the client
        parts = internal_error_parts(error, scope["path"])
    return parts


def _if_none_match(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"if-none-match":  # the first, as Litestar's Headers.get
            return value.decode("latin-1")
    return None


def jwks_parts(runtime: Runtime, scope: Scope) -> Parts:
    """``GET /.well-known/jwks.json``: :func:`issuer.http.wellknown.jwks_answer`."""
    try:
        return jwks_answer(runtime, _if_none_match(scope))
    except Exception as error:  # a bug: never a stack trace to the client
        return internal_error_parts(error, scope["path"])


async def jwks(runtime: Runtime, scope: Scope, receive: Receive) -> Parts | None:
    """The JWKS as a direct route (an ASGI server other than ``issuer serve``'s protocol)."""
    return jwks_parts(runtime, scope)


#: (ETag, max-age, not modified) → the JWKS answer with its headers encoded: a handful at most
#: (the key set changes with a rotation), so the cache is emptied when it holds more.
_JWKS_ANSWERS: dict[tuple[str, int, bool], Answer] = {}


def jwks_now(runtime: Runtime, scope: Scope) -> Answer:
    """:func:`jwks_parts` with its headers encoded, made once per key set (its ETag) and max-age."""
    etag = runtime.keyring.jwks_etag
    key = (etag, runtime.jwks_max_age, etag_matches(_if_none_match(scope), etag))
    answer = _JWKS_ANSWERS.get(key)
    if answer is None:
        status, fields, body = jwks_parts(runtime, scope)
        if status not in (200, 304):
            return status, _headers(fields, body), body or b""  # never cached
        if len(_JWKS_ANSWERS) >= 8:
            _JWKS_ANSWERS.clear()
        answer = _JWKS_ANSWERS[key] = (status, _headers(fields, body), body or b"")
    return answer


#: A direct route: the request's answer (status, headers, body), or None when the client is gone.
Route = Callable[[Runtime, Scope, Receive], Awaitable[Parts | None]]

#: (path, method) → the route; the path as the ASGI server decoded it, matched exactly.
DIRECT: dict[tuple[str, str], Route] = {
    ("/token", "POST"): token,
    ("/.well-known/jwks.json", "GET"): jwks,
}

#: (path, method) → an answer that needs no waiting, which ``issuer serve``'s HTTP protocol
#: (:class:`issuer.http.limits.LimitedHttpToolsProtocol`) gives without starting the app's task:
#: :meth:`IssuerApp.answer_now`. Each is also in :data:`DIRECT`, for any other ASGI server, and
#: is one of the public documents of :mod:`issuer.http.cors`.
NOW: dict[tuple[str, str], Callable[[Runtime, Scope], Answer]] = {
    ("/.well-known/jwks.json", "GET"): jwks_now,
}

Hook = Callable[[Message, Scope], Awaitable[None]]


class IssuerApp(Litestar):
    """Litestar with :data:`DIRECT` answered in front of its router (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        direct: Mapping[tuple[str, str], Route] = DIRECT,
        now: Mapping[tuple[str, str], Callable[[Runtime, Scope], Answer]] = NOW,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._direct = dict(direct)
        self._now = dict(now)
        self.now_paths = frozenset(self._now)  # what issuer serve's protocol asks answer_now for
        # answer_now adds what these hooks add to a public document, without running them
        if self._now and (
            list(kwargs.get("before_send") or ()) != [common_headers, cors_headers]
            or any(path not in PUBLIC_DOCUMENTS for path, _ in self._now)
        ):
            raise ValueError("answers given at once are public documents under the app's own two hooks")
        # The app's before_send hooks; they change only a response's start (its headers)
        self._hooks: list[Hook] = list(self.before_send)  # type: ignore[arg-type]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            route = self._direct.get((scope["path"], scope["method"]))
            if route is not None:
                scope["app"] = scope["litestar_app"] = self  # as Litestar sets them
                scope.setdefault("state", {})
                await self._answer(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer(self, route: Route, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """The route under the edge, as :func:`~issuer.http.observe.observe` and Litestar's hooks
        would see it, in one pass: the request id added first, then the hooks' headers, counted
        before the last byte leaves."""
        runtime: Runtime = self.state["runtime"]
        exchange = Exchange(scope, runtime.metrics)
        try:
            parts = await route(runtime, scope, receive)
            if parts is None:  # the client is gone: nothing to send
                return
            status, fields, body = parts
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": status,
                "headers": exchange.answered(status, _headers(fields, body)),
            }
            for hook in self._hooks:
                await hook(start, scope)
            await send(start)
            exchange.count()
            await send({"type": "http.response.body", "body": body or b"", "more_body": False})
        finally:
            exchange.close()

    def answer_now(self, scope: HTTPScope) -> Answer | None:
        """The answer to a request of :data:`NOW`, computed here and now (None for any other),
        under the same edge as :meth:`_answer` (the request id, then what the hooks add to a
        public document: :data:`~issuer.http.responses.COMMON_HEADERS` and
        :func:`~issuer.http.cors.document_headers`), counted and logged before it is returned,
        since the caller writes it at once."""
        route = self._now.get((scope["path"], scope["method"]))
        if route is None:
            return None
        runtime: Runtime = self.state["runtime"]
        exchange = Exchange(scope, runtime.metrics)
        try:
            try:
                status, headers, body = route(runtime, scope)
            except Exception as error:  # a bug: never a stack trace to the client
                status, fields, content = internal_error_parts(error, scope["path"])
                headers, body = _headers(fields, content), content or b""
            headers = exchange.answered(status, headers)
            headers += (*COMMON_HEADERS, *document_headers(scope))
            exchange.count()
            return status, headers, body
        finally:
            exchange.close()
