"""The proxy: ``PREFIX/rest`` to ``URL/rest`` for each ``BFF_UPSTREAMS`` entry, and nothing else.

- Only the configured prefixes have routes; any other path is a 404 (allowlist).
- ``X-CSRF: 1`` is required (403 without), as for every state-changing BFF request; a live
  session is required (401 without); its access token is refreshed first when due
  (:class:`issuer.bff.refresh.Refresher`) and sent as ``Authorization: Bearer`` (RFC 6750 2.1).
- The browser's ``Cookie``, ``Authorization``, ``X-CSRF``, ``Host``, forwarding headers
  (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``: the browser's claims) and hop-by-hop headers
  (RFC 9110 7.6.1: ``Connection`` and the fields it names, ``Keep-Alive``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``) are not forwarded.
- The upstream's ``Set-Cookie`` is never forwarded: cookies set on the BFF's origin by an API
  would be sent to every upstream and to the BFF itself, mixing the API's state with the
  browser's session; APIs keep state in their own storage, keyed by the token's ``sub``. Its
  hop-by-hop and ``Access-Control-*`` headers are dropped too (the BFF's origin grants no CORS).
- Only the browser's own fields are sent on: the client adds no ``Accept``, ``Accept-Encoding``,
  ``User-Agent`` or ``Content-Type`` of its own (an ``Accept-Encoding`` the browser did not send
  could bring back an encoding it cannot decode: the answer's bytes are relayed as they are).
  Values are sent as the browser's bytes; one that is not UTF-8 is a 400.
- The request body is read whole, up to ``BFF_MAX_BODY_BYTES`` (413 above it). An answer with a
  ``Content-Length`` of at most :data:`SMALL` bytes (and a HEAD, 204 or 304 answer) is read whole
  and sent in one piece; so is any other answer whose body is complete in its first read (then
  sent with a ``Content-Length``). The rest are streamed back as the upstream sends them, that
  first read at once. Either way raw bytes, ``Content-Encoding`` kept.
- Paths with dot segments (also percent-encoded) are a 404: they could climb out of the
  upstream's base path. The path and query are forwarded as the browser sent them (``raw_path``;
  bytes above 0x7F percent-encoded).
- An upstream that cannot be reached, fails or exceeds ``BFF_HTTP_TIMEOUT`` before its answer's
  head (or, for a small answer, its body) is a 502; a failure while streaming ends the answer
  early.

The upstream hop is aiohttp's client (:attr:`BffRuntime.proxy_http
<issuer.bff.runtime.BffRuntime.proxy_http>`): its C parser costs a fraction of httpx's per request
(bench/README.md, "The BFF").
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from litestar import HttpMethod, Request, Response, route
from litestar.handlers import HTTPRouteHandler
from litestar.response import Stream
from yarl import URL

from issuer.bff.http import clear_session_cookie, csrf_ok, json_error, runtime_of
from issuer.bff.metrics import BffMetrics
from issuer.bff.oidc import IssuerUnavailable
from issuer.bff.settings import Upstream

__all__ = ["SMALL", "proxy_handlers"]

log = logging.getLogger("issuer.bff")

METHODS: list[HttpMethod] = [
    HttpMethod.GET,
    HttpMethod.HEAD,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
    HttpMethod.OPTIONS,
]
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The browser's forwarding headers are its own claims: an upstream must not take them for the BFF's.
FORWARDING = {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
REQUEST_DROPPED = HOP_BY_HOP | FORWARDING | {"cookie", "authorization", "host", "content-length", "x-csrf"}
# CORS is the BFF's to grant (it never does): an upstream's Access-Control-* would speak for its origin.
CORS = {
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
    "access-control-max-age",
}
RESPONSE_DROPPED = HOP_BY_HOP | CORS | {"set-cookie", "set-cookie2"}
# The same sets as bytes, to filter raw ASGI and aiohttp headers without decoding every name.
_REQUEST_DROPPED = frozenset(name.encode() for name in REQUEST_DROPPED)
_RESPONSE_DROPPED = frozenset(name.encode() for name in RESPONSE_DROPPED)

SMALL = 64 * 1024
"""Answers declaring at most this many bytes are read whole and sent with their length (one ASGI
body message, no streaming task); longer or unknown-length answers are streamed unless the first
read holds all of them."""
_NO_BODY = frozenset({204, 304})
_SAFE = string.printable.strip()  # path and query bytes kept as they are; the rest percent-encoded


class _NotUtf8(ValueError):
    pass


def _connection_tokens(headers: Any) -> frozenset[bytes]:
    """The field names that ``Connection`` names (RFC 9110 7.6.1), lower case."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def _forwarded_headers(raw: Iterable[tuple[bytes, bytes]], access_token: str) -> list[tuple[str, str]]:
    """The browser's fields that go on to the upstream, then the session's bearer token. aiohttp
    writes values as UTF-8: a value that is not UTF-8 could not go on unchanged (:class:`_NotUtf8`)."""
    dropped = _REQUEST_DROPPED | _connection_tokens(raw)
    try:
        headers = [
            (name.decode("latin-1"), value.decode("utf-8"))
            for name, value in raw
            if name.lower() not in dropped
        ]
    except UnicodeDecodeError as error:
        raise _NotUtf8 from error
    headers.append(("authorization", f"Bearer {access_token}"))
    return headers


def _returned_headers(answer: aiohttp.ClientResponse) -> dict[str, str]:
    raw = answer.raw_headers
    dropped = _RESPONSE_DROPPED | _connection_tokens(raw)
    merged: dict[str, str] = {}
    for name_bytes, value_bytes in raw:
        lower = name_bytes.lower()
        if lower in dropped:
            continue
        name = lower.decode("latin-1")
        value = value_bytes.decode("latin-1")
        merged[name] = f"{merged[name]}, {value}" if name in merged else value  # RFC 9110 5.3
    return merged


def _as_sent(text: str) -> str:
    """A path or query as the browser sent it (latin-1 text of its bytes), with the bytes above
    0x7F percent-encoded: a request line is ASCII."""
    return text if text.isascii() else quote(text.encode("latin-1"), safe=_SAFE)


async def _relay(answer: aiohttp.ClientResponse, first: bytes) -> AsyncIterator[bytes]:
    """``first``, then the rest of the answer's body as it arrives; the connection goes back to
    the pool when it was read to the end (aiohttp closes it otherwise)."""
    try:
        yield first
        async for chunk in answer.content.iter_any():
            yield chunk
    finally:
        answer.release()


def _suffix(request: Request[Any, Any, Any], prefix: str) -> str | None:
    """The part of the raw path after ``prefix`` (``""`` or ``/...``), or None when the path is
    not plainly under it or has a dot segment."""
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode("latin-1")
    path = raw_path.decode("latin-1")
    if not path.startswith(prefix) or path[len(prefix) : len(prefix) + 1] not in ("", "/"):
        return None
    rest = path[len(prefix) :]
    if any(unquote(segment) in (".", "..") for segment in rest.split("/")):
        return None
    return rest


def _make(upstream: Upstream, max_body: int) -> HTTPRouteHandler:
    prefix = upstream.prefix

    async def proxy(request: Request[Any, Any, Any]) -> Response[Any]:
        bff = runtime_of(request)
        if not csrf_ok(request):
            return json_error(403, "forbidden", "the X-CSRF: 1 header is required")
        rest = _suffix(request, prefix)
        if rest is None:
            return json_error(404, "not_found", "no such path")
        session = await bff.session(request.cookies)
        if session is not None:
            try:
                session = await bff.refresher.fresh(session)
            except IssuerUnavailable as error:
                log.warning("bff refresh: issuer unavailable", extra={"detail": str(error)})
                return json_error(502, "temporarily_unavailable", "the sign-in service cannot be reached")
        if session is None:
            response = json_error(401, "unauthorized", "no session")
            clear_session_cookie(response)
            return response
        query = request.scope.get("query_string", b"").decode("latin-1")
        target = upstream.url + _as_sent(rest) + (f"?{_as_sent(query)}" if query else "")
        try:
            headers = _forwarded_headers(request.scope["headers"], session.tokens.access_token)
        except _NotUtf8:
            return json_error(400, "invalid_request", "a header value is not UTF-8")
        body = await request.body()
        method = request.method
        metrics = bff.metrics
        started = time.perf_counter()
        try:
            answer = await bff.proxy_http.request(
                method, URL(target, encoded=True), headers=headers, data=body or None, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            return _unavailable(metrics, prefix, error)
        elapsed = time.perf_counter() - started
        metrics.upstream_timer(prefix).observe(elapsed)
        status = answer.status
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "bff proxied", extra={"upstream": prefix, "status": status, "ms": round(elapsed * 1000, 2)}
            )
        returned = _returned_headers(answer)
        length = answer.content_length
        try:
            if (length is not None and length <= SMALL) or method == "HEAD" or status in _NO_BODY:
                first = await answer.read()
                whole = True
            else:  # what has come so far: often the whole answer, also when its length is unknown
                first = await answer.content.readany()
                whole = answer.content.at_eof()
        except (aiohttp.ClientError, TimeoutError) as error:
            answer.close()
            return _unavailable(metrics, prefix, error)
        metrics.proxied_counter(prefix, status).inc()
        if whole:
            answer.release()
            return Response(first, status_code=status, headers=returned)
        return Stream(_relay(answer, first), status_code=status, headers=returned)

    name = "bff-proxy" + upstream.prefix.replace("/", "-")
    return route(
        path=[upstream.prefix, upstream.prefix + "/{rest:path}"],
        http_method=METHODS,
        name=name,
        include_in_schema=False,
        request_max_body_size=max_body,
    )(proxy)


def _unavailable(metrics: BffMetrics, prefix: str, error: BaseException) -> Response[Any]:
    log.warning("bff upstream unavailable", extra={"upstream": prefix, "error": type(error).__name__})
    metrics.proxied_counter(prefix, 502).inc()
    return json_error(502, "bad_gateway", "the upstream cannot be reached")


def proxy_handlers(upstreams: tuple[Upstream, ...], max_body: int) -> list[HTTPRouteHandler]:
    return [_make(upstream, max_body) for upstream in upstreams]
