"""Rendering: token and error JSON with the headers RFC 6749 5.1/5.2 require, in one place; and
the headers every response carries (:func:`common_headers`: ``X-Content-Type-Options: nosniff``)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import Message, Scope

from issuer.errors import (
    BearerError,
    InvalidClient,
    IssuerError,
    Overloaded,
    RateLimited,
    TemporarilyUnavailable,
)

__all__ = [
    "COMMON_HEADERS",
    "NO_STORE",
    "bearer_challenge",
    "common_headers",
    "encode_json",
    "error_parts",
    "error_response",
    "http_error_parts",
    "http_exception_response",
    "internal_error_parts",
    "internal_error_response",
    "json_response",
]

log = logging.getLogger("issuer.http")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_encode = encode_json = msgspec.json.Encoder().encode

#: On every response of the app: no browser may guess a content type other than the one sent
#: (a JSON error echoing input must never be sniffed into HTML or script).
COMMON_HEADERS = ((b"x-content-type-options", b"nosniff"),)


async def common_headers(message: Message, scope: Scope) -> None:
    """Litestar ``before_send`` hook: adds :data:`COMMON_HEADERS` to every response start, also
    the router's 404/405 and the exception handlers' answers, which no middleware sees."""
    if message["type"] == "http.response.start":
        message["headers"] = [*message.get("headers", ()), *COMMON_HEADERS]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return _response((status, headers or NO_STORE, _encode(body)))


def _response(parts: tuple[int, dict[str, str], bytes]) -> Response[bytes]:
    status, headers, body = parts
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(request: Request[Any, Any, Any], error: IssuerError) -> Response[bytes]:
    return _response(error_parts(error, request.url.path, getattr(request.app.state, "retry_after", 5)))


def error_parts(error: IssuerError, path: str, retry_after: int) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and JSON body of ``error`` (RFC 6749 5.2, RFC 6750 3), logged once here:
    what :func:`error_response` answers, and the direct routes (:mod:`issuer.http.direct`) too."""
    headers = dict(NO_STORE)
    if isinstance(error, InvalidClient) and error.basic:
        headers["WWW-Authenticate"] = 'Basic realm="issuer", charset="UTF-8"'
    if isinstance(error, BearerError):
        headers["WWW-Authenticate"] = bearer_challenge(error)
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(error.retry_after)
        log.info("load shed", extra={"detail": error.detail, "path": path})
    elif isinstance(error, TemporarilyUnavailable):
        headers["Retry-After"] = str(retry_after)
        log.warning("backing service unavailable", extra={"detail": error.detail, "path": path})
    elif isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
        log.info("rate limited", extra={"detail": error.detail, "path": path})
    elif error.detail:
        log.info("request refused", extra={"code": error.code, "detail": error.detail, "path": path})
    return error.status, headers, _encode({"error": error.code, "error_description": error.description})


def bearer_challenge(error: BearerError) -> str:
    """RFC 6750 3: ``Bearer realm="issuer"``, then ``error``, ``error_description``, ``scope``."""
    parts = ['Bearer realm="issuer"']
    if error.header_error is not None:
        parts.append(f'error="{error.header_error}"')
        # RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash)
        description = "".join(ch for ch in error.description if ch.isascii() and ch.isprintable())
        parts.append('error_description="{}"'.format(description.replace('"', "'").replace("\\", "/")))
    if error.scope is not None:
        parts.append(f'scope="{error.scope}"')
    return ", ".join(parts)


_HTTP_CODES = {413: "invalid_request", 415: "invalid_request", 405: "invalid_request", 404: "not_found"}


def http_exception_response(request: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    """Litestar's own refusals (404, 405, 413, ...) in the same JSON shape, never a stack trace."""
    return _response(http_error_parts(error.status_code, error.headers))


def http_error_parts(status: int, extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """An HTTP-level refusal (404, 405, 413, ...) in the error JSON shape."""
    code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else "server_error")
    description = {413: "request body too large", 405: "method not allowed", 404: "not found"}.get(
        status, "invalid request" if status < 500 else "internal error"
    )
    headers = dict(NO_STORE)
    headers.update(extra or {})
    return status, headers, _encode({"error": code, "error_description": description})


def internal_error_response(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    return _response(internal_error_parts(error, request.url.path))


def internal_error_parts(error: Exception, path: str) -> tuple[int, dict[str, str], bytes]:
    """A bug: logged with its traceback, answered as a bare 500 ``server_error``."""
    log.error("unhandled error", exc_info=error, extra={"path": path})
    return 500, dict(NO_STORE), _encode({"error": "server_error", "error_description": "internal error"})
