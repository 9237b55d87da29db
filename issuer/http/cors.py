"""CORS for the token-side endpoints (Fetch standard, "CORS protocol"), as a ``before_send`` hook.

Paths and answers:

* ``/token``, ``/revoke``, ``/userinfo``: for an ``Origin`` that
  :class:`~issuer.signin.origins.AllowedOrigins` allows (public clients' redirect URI origins),
  ``Access-Control-Allow-Origin: <that origin>``, ``Vary: Origin`` and
  ``Access-Control-Expose-Headers: WWW-Authenticate, Retry-After`` (so that an app can read why
  it was refused), on every answer, errors included. Never ``Access-Control-Allow-Credentials``:
  these endpoints take no cookies, and a browser must not send any.
* ``/.well-known/openid-configuration``, ``/.well-known/oauth-authorization-server``,
  ``/.well-known/jwks.json``: ``Access-Control-Allow-Origin: *`` for any origin, no lookup, no
  ``Vary``: the documents are public and the same for everyone.
* A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is Litestar's own 204 for the
  path, with ``Access-Control-Allow-Methods: GET, POST``, ``Access-Control-Allow-Headers:
  Authorization, Content-Type`` and ``Access-Control-Max-Age: 600`` added when the origin is
  allowed. An origin that is not allowed gets the same 204 with no CORS header at all, which the
  browser treats as a refusal (nothing tells a stranger which origins are registered).
* Every other path (``/authorize``, ``/login``, ``/consent``, ``/logout``, ``/introspect``, the
  feed, health, metrics) never gets a CORS header, whatever the ``Origin``.

A request without ``Origin`` costs one set lookup of the path and one header scan.
"""

from __future__ import annotations

import logging

from litestar.types import Message, Scope

from issuer.errors import IssuerError

__all__ = ["CORS_PATHS", "PUBLIC_DOCUMENTS", "cors_headers", "document_headers"]

log = logging.getLogger("issuer.http")

#: Answer CORS for the origins of public clients' redirect URIs.
CORS_PATHS = frozenset({"/token", "/revoke", "/userinfo"})
#: Answer CORS with ``*``: public, identical for every origin.
PUBLIC_DOCUMENTS = frozenset(
    {"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/.well-known/jwks.json"}
)
_ALL = CORS_PATHS | PUBLIC_DOCUMENTS
_PREFLIGHT = (
    (b"access-control-allow-methods", b"GET, POST"),
    (b"access-control-allow-headers", b"Authorization, Content-Type"),
    (b"access-control-max-age", b"600"),
)
_EXPOSE = (b"access-control-expose-headers", b"WWW-Authenticate, Retry-After")
_ANY = (b"access-control-allow-origin", b"*")


def _origin(scope: Scope) -> tuple[str | None, bool]:
    """The request's ``Origin`` (None when absent or repeated) and whether it is a preflight."""
    origin: bytes | None = None
    count = 0
    preflight = False
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin, count = value, count + 1
        elif name == b"access-control-request-method":
            preflight = True
    if origin is None or count != 1 or len(origin) > 300:
        return None, False
    try:
        text = origin.decode("ascii")
    except UnicodeDecodeError:
        return None, False
    return text, preflight and scope.get("method") == "OPTIONS"


async def cors_headers(message: Message, scope: Scope) -> None:
    """Litestar ``before_send`` hook: the CORS headers of the module docstring."""
    if message["type"] != "http.response.start" or scope.get("path") not in _ALL:
        return
    path = scope["path"]
    if path in PUBLIC_DOCUMENTS:
        message["headers"] = [*message.get("headers", ()), *document_headers(scope)]
        return
    origin, preflight = _origin(scope)
    added = [(b"vary", b"Origin")]  # the answer depends on it, allowed or not
    if origin is not None and await _allowed(scope, origin):
        added.append((b"access-control-allow-origin", origin.encode("ascii")))
        added.extend(_PREFLIGHT if preflight else (_EXPOSE,))
    message["headers"] = [*message.get("headers", ()), *added]


def document_headers(scope: Scope) -> tuple[tuple[bytes, bytes], ...]:
    """The CORS headers of a response of :data:`PUBLIC_DOCUMENTS` (no lookup, no waiting)."""
    origin, preflight = _origin(scope)
    if origin is None:
        return ()
    return (_ANY, *_PREFLIGHT) if preflight else (_ANY,)


async def _allowed(scope: Scope, origin: str) -> bool:
    runtime = getattr(scope["app"].state, "runtime", None)
    if runtime is None:
        return False
    try:
        return bool(await runtime.origins.allows(origin))
    except IssuerError as error:  # the database is down: no CORS (fail closed), the answer stands
        log.warning("CORS origins unavailable", extra={"detail": error.detail, "path": scope["path"]})
        return False
