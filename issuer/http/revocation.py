"""``POST /revoke`` (RFC 7009), ``POST /introspect`` (RFC 7662) and the ``/revocations`` feed.

Controllers only: parse the form, authenticate the client, call :mod:`issuer.revocation.service` or
:mod:`issuer.revocation.denylist`, render. ``GET`` on the two POST endpoints is a 405 (Litestar's).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from litestar import Request, Response, get, post

from issuer.clients import ClientRecord
from issuer.errors import InvalidRequest, NotPermitted
from issuer.http.client_auth import authenticate_client
from issuer.http.edge import check_cursor, check_token
from issuer.http.forms import read_form
from issuer.http.openapi import (
    FEED,
    FEED_FIELDS,
    INTROSPECTION,
    REVOKE_FIELDS,
    form_operation,
    not_modified,
    ok_empty,
    ok_json,
    read_operation,
)
from issuer.http.responses import NO_STORE, json_response
from issuer.runtime import Runtime

__all__ = ["introspect", "revocations", "revocations_post", "revoke"]

_encode = msgspec.json.Encoder().encode
FEED_CACHE_CONTROL = "private, max-age=1"


def _address(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


async def _introspector(
    runtime: Runtime, request: Request[Any, Any, Any], form: dict[str, str]
) -> ClientRecord:
    client = await authenticate_client(
        runtime.clients, request.headers.get("authorization"), form, allow_public=False
    )
    if not client.can_introspect:
        raise NotPermitted(
            "this client is not registered with --can-introspect", detail="introspection refused"
        )
    return client


@post(
    "/revoke",
    status_code=200,
    operation_class=form_operation(
        REVOKE_FIELDS,
        ["token"],
        ok_empty("revoked, or nothing to revoke (RFC 7009 2.2)"),
        (400, 401, 413, 415, 503),
    ),
)
async def revoke(request: Request[Any, Any, Any]) -> Response[bytes]:
    """RFC 7009 2.1: any authenticated client, for its own tokens; 200 whatever the token was."""
    runtime: Runtime = request.app.state.runtime
    form = await read_form(request)
    client = await authenticate_client(runtime.clients, request.headers.get("authorization"), form)
    token = form.get("token")
    if token is None:
        raise InvalidRequest("missing parameter: token")
    hint = form.get("token_type_hint")
    await runtime.revocation.revoke(check_token(token), hint, client, _address(request))
    return Response(b"", status_code=200, headers=NO_STORE)


@post(
    "/introspect",
    status_code=200,
    operation_class=form_operation(
        REVOKE_FIELDS, ["token"], ok_json(INTROSPECTION, "RFC 7662 2.2"), (400, 401, 403, 413, 415, 503)
    ),
)
async def introspect(request: Request[Any, Any, Any]) -> Response[bytes]:
    """RFC 7662 2.1: clients registered with ``--can-introspect`` only."""
    runtime: Runtime = request.app.state.runtime
    form = await read_form(request)
    await _introspector(runtime, request, form)
    token = form.get("token")
    if token is None:
        raise InvalidRequest("missing parameter: token")
    body = await runtime.revocation.introspect(check_token(token), form.get("token_type_hint"))
    runtime.metrics.introspected(bool(body["active"]))
    return json_response(body)


_FEED_OK = ok_json(FEED, "the feed page", cache=FEED_CACHE_CONTROL)


@get(
    "/revocations",
    status_code=200,
    operation_class=read_operation(
        _FEED_OK,
        {304: not_modified()},
        (400, 401, 403, 503),
        query={"since": FEED_FIELDS["since"]},
        secured=True,
    ),
)
async def revocations(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The denylist as a feed: ``?since=CURSOR``, Basic auth, clients with ``--can-introspect``."""
    return await _feed(request, {}, request.query_params.get("since"))


@post(
    "/revocations",
    status_code=200,
    operation_class=form_operation(
        FEED_FIELDS, [], _FEED_OK, (400, 401, 403, 413, 415, 503), extra={304: not_modified()}
    ),
)
async def revocations_post(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The feed with the cursor (and, optionally, client_secret_post) in a form."""
    form = await read_form(request)
    return await _feed(request, form, None)


async def _feed(
    request: Request[Any, Any, Any], form: dict[str, str], query_since: str | None
) -> Response[bytes]:
    runtime: Runtime = request.app.state.runtime
    await _introspector(runtime, request, form)
    raw = form.get("since") if request.method == "POST" else query_since
    since = check_cursor(raw) if raw else 0  # ASCII digits only: never str.isdigit or a bare int()
    entries, next_cursor = await runtime.denylist.feed(since)
    body = _encode({"entries": [entry.to_json() for entry in entries], "next_cursor": str(next_cursor)})
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": FEED_CACHE_CONTROL, "ETag": etag, "Vary": "Authorization"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(body, status_code=200, media_type="application/json", headers=headers)
