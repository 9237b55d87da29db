"""Discovery: the JWKS (RFC 7517) and authorization server metadata (RFC 8414)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from issuer.grants import REGISTRY
from issuer.http.client_auth import AUTH_METHODS
from issuer.http.openapi import JWKS, METADATA, not_modified, ok_json, read_operation
from issuer.http.responses import json_response
from issuer.runtime import Runtime

__all__ = ["jwks", "metadata", "metadata_document"]


@get(
    "/.well-known/jwks.json",
    operation_class=read_operation(
        ok_json(JWKS, "the public keys", cache="public, max-age=N"), {304: not_modified()}
    ),
)
async def jwks(request: Request[Any, Any, Any]) -> Response[bytes]:
    """RFC 7517 JWK Set: the published keys (next, active, retired), public members only."""
    runtime: Runtime = request.app.state.runtime
    ring = runtime.keyring
    headers = {"Cache-Control": f"public, max-age={runtime.jwks_max_age}", "ETag": ring.jwks_etag}
    if _matches(request.headers.get("if-none-match"), ring.jwks_etag):
        return Response(b"", status_code=304, headers=headers)
    return Response(ring.jwks_body, media_type="application/json", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: ``*`` or a list of entity tags, compared weakly (a ``W/`` prefix is ignored)."""
    if not if_none_match or not etag:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def metadata_document(runtime: Runtime) -> dict[str, Any]:
    """Exactly what this server supports; endpoints added by later parts register themselves."""
    base = runtime.settings.url
    document: dict[str, Any] = {
        "issuer": base,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": sorted(REGISTRY),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "response_types_supported": [],  # no authorization endpoint
    }
    document.update(runtime.metadata_extra)
    return document


@get(
    "/.well-known/oauth-authorization-server",
    operation_class=read_operation(ok_json(METADATA, "RFC 8414 3.2", cache="public, max-age=300")),
)
async def metadata(request: Request[Any, Any, Any]) -> Response[bytes]:
    """RFC 8414 authorization server metadata."""
    runtime: Runtime = request.app.state.runtime
    return json_response(metadata_document(runtime), headers={"Cache-Control": "public, max-age=300"})
