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
- The request body is read whole, up to ``BFF_MAX_BODY_BYTES`` (413 above it); the answer is
  streamed back as the upstream sends it (raw bytes, ``Content-Encoding`` kept).
- Paths with dot segments (also percent-encoded) are a 404: they could climb out of the
  upstream's base path. The path is forwarded as the browser sent it (``raw_path``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import httpx
from litestar import HttpMethod, Request, Response, route
from litestar.handlers import HTTPRouteHandler
from litestar.response import Stream

from issuer.bff.http import clear_session_cookie, csrf_ok, json_error, runtime_of
from issuer.bff.oidc import IssuerUnavailable
from issuer.bff.settings import Upstream

__all__ = ["proxy_handlers"]

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


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.decode("latin-1").split(","))
    return named


def _forwarded_headers(raw: list[tuple[bytes, bytes]], access_token: str) -> list[tuple[str, str]]:
    dropped = REQUEST_DROPPED | _connection_tokens(raw)
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in raw
        if name.decode("latin-1").lower() not in dropped
    ]
    headers.append(("authorization", f"Bearer {access_token}"))
    return headers


def _returned_headers(response: httpx.Response) -> dict[str, str]:
    raw = list(response.headers.raw)
    dropped = RESPONSE_DROPPED | _connection_tokens(raw)
    merged: dict[str, str] = {}
    for name_bytes, value_bytes in raw:
        name = name_bytes.decode("latin-1").lower()
        if name in dropped:
            continue
        value = value_bytes.decode("latin-1")
        merged[name] = f"{merged[name]}, {value}" if name in merged else value  # RFC 9110 5.3
    return merged


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
    async def proxy(request: Request[Any, Any, Any]) -> Response[Any]:
        bff = runtime_of(request)
        if not csrf_ok(request):
            return json_error(403, "forbidden", "the X-CSRF: 1 header is required")
        rest = _suffix(request, upstream.prefix)
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
        target = upstream.url + rest + (f"?{query}" if query else "")
        body = await request.body()
        outgoing = bff.http.build_request(
            request.method,
            target,
            headers=_forwarded_headers(list(request.scope["headers"]), session.tokens.access_token),
            content=body,
        )
        started = time.perf_counter()
        try:
            answer = await bff.http.send(outgoing, stream=True)
        except httpx.HTTPError as error:
            log.warning(
                "bff upstream unavailable", extra={"upstream": upstream.prefix, "error": type(error).__name__}
            )
            bff.metrics.proxied.labels(upstream.prefix, "502").inc()
            return json_error(502, "bad_gateway", "the upstream cannot be reached")
        elapsed = time.perf_counter() - started
        bff.metrics.upstream_seconds.labels(upstream.prefix).observe(elapsed)
        bff.metrics.proxied.labels(upstream.prefix, str(answer.status_code)).inc()
        log.debug(
            "bff proxied",
            extra={
                "upstream": upstream.prefix,
                "status": answer.status_code,
                "ms": round(elapsed * 1000, 2),
            },
        )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        return Stream(relay(), status_code=answer.status_code, headers=_returned_headers(answer))

    name = "bff-proxy" + upstream.prefix.replace("/", "-")
    return route(
        path=[upstream.prefix, upstream.prefix + "/{rest:path}"],
        http_method=METHODS,
        name=name,
        include_in_schema=False,
        request_max_body_size=max_body,
    )(proxy)


def proxy_handlers(upstreams: tuple[Upstream, ...], max_body: int) -> list[HTTPRouteHandler]:
    return [_make(upstream, max_body) for upstream in upstreams]
