"""``POST /token`` (RFC 6749 3.2): parse, authenticate the client, dispatch to the grant registry.

:func:`issue` is the endpoint once the form is read; it is answered below Litestar's routing by
:mod:`issuer.http.direct` (the hot path: ``POST /token`` exactly), and by the Litestar handler
:func:`token` for what Litestar's router takes there (``/token/``), which also gives the
endpoint its OpenAPI operation, its ``OPTIONS`` and its 405.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post

from issuer.errors import InvalidRequest, UnsupportedGrantType
from issuer.grants import REGISTRY, TokenRequest
from issuer.http.client_auth import authenticate_client
from issuer.http.forms import read_form
from issuer.http.openapi import TOKEN_FIELDS, TOKEN_RESPONSE, form_operation, ok_json
from issuer.http.responses import json_response
from issuer.observability.logs import note_grant
from issuer.runtime import Runtime

__all__ = ["issue", "token"]


async def issue(
    runtime: Runtime, form: dict[str, str], authorization: str | None, address: str | None
) -> dict[str, Any]:
    """The token response's JSON members for a parsed form (consumed), the request's first
    ``Authorization`` header and the client's address; raises :class:`~issuer.errors.IssuerError`."""
    grant_type = form.pop("grant_type", None)
    if grant_type is None:
        raise InvalidRequest("missing parameter: grant_type")
    handler = REGISTRY.get(grant_type)
    note_grant(grant_type if handler is not None else "unsupported")
    client = await authenticate_client(runtime.clients, authorization, form)
    if handler is None:
        raise UnsupportedGrantType(f"unsupported grant_type {grant_type[:40]!r}")
    if runtime.rate_limits.enabled:  # before the grant: the password limits precede the argon2 hash
        await runtime.rate_limits.check(client.client_id, grant_type, form.get("username"), address)
    result = await handler(runtime.grants, TokenRequest(client, form, address))
    return result.to_json()


@post(
    "/token",
    status_code=200,
    operation_class=form_operation(
        TOKEN_FIELDS, ["grant_type"], ok_json(TOKEN_RESPONSE, "RFC 6749 5.1"), (400, 401, 413, 415, 429, 503)
    ),
)
async def token(request: Request[Any, Any, Any]) -> Response[bytes]:
    """RFC 6749 3.2: the authorization_code, client_credentials, password and refresh_token grants."""
    runtime: Runtime = request.app.state.runtime
    form = await read_form(request)
    # The TCP peer, or what X-Forwarded-For says when the peer is in ISSUER_TRUSTED_PROXIES (uvicorn).
    address = request.client.host if request.client else None
    return json_response(await issue(runtime, form, request.headers.get("authorization"), address))
