"""``GET|POST /userinfo``: the OpenID Connect UserInfo endpoint (OIDC Core 1.0, 5.3), a protected
resource of the issuer's own, guarded by RFC 6750 Bearer tokens.

- The access token comes in the ``Authorization: Bearer`` header only (RFC 6750 2.1), for GET and
  POST alike. The form-body (2.2) and query (2.3) methods are optional and not accepted: a
  request that puts ``access_token`` in the query is ``400 invalid_request`` (a token in a URL
  ends up in logs); a POST body is never read.
- The token is read as a resource server reads it: the verifier's own rules
  (:func:`issuer_verify.core.decode` through
  :meth:`issuer.revocation.service.Revocation.read_access_token`: shape, ``typ`` ``at+jwt``,
  the key's algorithm, signature by a published and unrevoked key of the ring, ``iss``), then
  ``exp`` on our clock, then the denylist (``jti``, ``sid``, ``sub``, ``client``, ``kid``), fail
  closed (503 when the denylist cannot answer). Any audience is accepted: the userinfo endpoint is
  part of the issuer, which every access token it issued may reach (OIDC Core 5.3).
- RFC 6750 3: ``401`` with ``WWW-Authenticate: Bearer realm="issuer"`` and no error code when
  there is no Bearer token; ``401 invalid_token`` for a bad one (and for a client's own
  ``client_credentials`` token, which names no user, and for a disabled or deleted user);
  ``403 insufficient_scope`` (``scope="openid"``) without ``openid``.
- The answer: ``sub`` and ``preferred_username`` (the username in the user store), plain JSON
  (no signed userinfo), ``Cache-Control: no-store``.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response, route

from issuer.errors import BearerRequired, InsufficientScope, InvalidRequest, InvalidToken
from issuer.http.responses import json_response
from issuer.runtime import Runtime

__all__ = ["userinfo"]

# RFC 6750 2.1: credentials = "Bearer" 1*SP b68token; b64token = 1*( ALPHA / DIGIT / "-" / "." /
# "_" / "~" / "+" / "/" ) *"="; at most the token size the verifier reads.
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]{1,8192}=*)", re.ASCII)


def bearer_token(request: Request[Any, Any, Any]) -> str:
    """The Bearer token of the request, or the RFC 6750 3.1 error to answer."""
    if "access_token" in request.query_params:
        raise InvalidRequest("send the access token in the Authorization header, never in the URL")
    values = request.headers.getall("authorization", [])
    if not values:
        raise BearerRequired()
    if len(values) > 1:
        raise InvalidRequest("more than one Authorization header")
    value = values[0]
    if value[:7].lower() != "bearer ":
        raise BearerRequired(detail="another authorization scheme")
    match = _BEARER.fullmatch(value)
    if match is None:
        raise InvalidToken("the access token is malformed", detail="malformed Bearer credentials")
    return match.group(1)


@route("/userinfo", http_method=["GET", "POST"], include_in_schema=False)
async def userinfo(request: Request[Any, Any, Any]) -> Response[bytes]:
    """OIDC Core 5.3.1/5.3.2: the claims about the user the access token was issued for."""
    runtime: Runtime = request.app.state.runtime
    token = bearer_token(request)
    revocation = runtime.revocation
    view = revocation.read_access_token(token)
    if view is None:
        raise InvalidToken(detail="not an access token of ours")
    if revocation.expired(view, runtime.clock()):
        raise InvalidToken("the access token has expired", detail="expired")
    if await runtime.denylist.is_revoked(view.claims, view.kid):
        raise InvalidToken("the access token has been revoked", detail="revoked")
    claims = view.claims
    subject = claims["sub"]
    if subject == claims["client_id"]:  # client_credentials: the client's own token, no user
        raise InvalidToken("this access token was issued to a client for itself and names no user")
    scopes = str(claims.get("scope", "")).split()
    if "openid" not in scopes:
        raise InsufficientScope("openid", "the userinfo endpoint needs the openid scope")
    username = await runtime.users.username(subject)
    if username is None:
        raise InvalidToken("the user of this access token is not active", detail="user disabled or gone")
    return json_response({"sub": subject, "preferred_username": username})
