"""Discovery: the JWKS (RFC 7517), authorization server metadata (RFC 8414) and the OpenID
Provider configuration (OpenID Connect Discovery 1.0, 3), which is the RFC 8414 document plus the
OpenID members. Both documents say exactly what is supported and nothing more: members whose
value would be the default (``frontchannel_logout_supported``: false, ...) are left out;
``scopes_supported`` is left out because the scopes are each client's registration, not a
fixed list of the server's."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from issuer.grants import REGISTRY
from issuer.http.client_auth import TOKEN_AUTH_METHODS
from issuer.http.openapi import JWKS, METADATA, not_modified, ok_json, read_operation
from issuer.http.responses import json_response
from issuer.runtime import Runtime

__all__ = [
    "CLAIMS_SUPPORTED",
    "etag_matches",
    "jwks",
    "jwks_answer",
    "metadata",
    "metadata_document",
    "openid_configuration",
    "openid_document",
]


@get(
    "/.well-known/jwks.json",
    operation_class=read_operation(
        ok_json(JWKS, "the public keys", cache="public, max-age=N"), {304: not_modified()}
    ),
)
async def jwks(request: Request[Any, Any, Any]) -> Response[bytes]:
    """RFC 7517 JWK Set: the published keys (next, active, retired), public members only."""
    status, headers, body = jwks_answer(request.app.state.runtime, request.headers.get("if-none-match"))
    if body is None:
        return Response(b"", status_code=status, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def jwks_answer(runtime: Runtime, if_none_match: str | None) -> tuple[int, dict[str, str], bytes | None]:
    """The JWKS answer's status, headers and body (None: a 304, no body): the published keys with
    their ETag, cacheable for ``runtime.jwks_max_age`` seconds."""
    ring = runtime.keyring
    headers = {"Cache-Control": f"public, max-age={runtime.jwks_max_age}", "ETag": ring.jwks_etag}
    if etag_matches(if_none_match, ring.jwks_etag):
        return 304, headers, None
    return 200, headers, ring.jwks_body


def etag_matches(if_none_match: str | None, etag: str) -> bool:
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
        "token_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),  # none: public clients
        # browser sign-in (issuer.http.authorize, issuer.http.logout, issuer.http.userinfo)
        "authorization_endpoint": f"{base}/authorize",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],  # PKCE required of every client; never plain
        "authorization_response_iss_parameter_supported": True,  # RFC 9207
        "end_session_endpoint": f"{base}/logout",  # OpenID Connect RP-Initiated Logout 1.0
        "userinfo_endpoint": f"{base}/userinfo",
    }
    document.update(runtime.metadata_extra)
    return document


#: What an id_token (issuer.signin.idtoken) and the userinfo answer may hold.
CLAIMS_SUPPORTED = ("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "preferred_username")
_DOCUMENT_CACHE = {"Cache-Control": "public, max-age=300"}


def openid_document(runtime: Runtime) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0, 3: the RFC 8414 document plus the OpenID members."""
    document = metadata_document(runtime)
    document.update(
        {
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [runtime.settings.signing_alg],
            "claims_supported": list(CLAIMS_SUPPORTED),
            # Each of these defaults to something we do not do (request_uri: true), so say no.
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }
    )
    return document


@get(
    "/.well-known/oauth-authorization-server",
    operation_class=read_operation(ok_json(METADATA, "RFC 8414 3.2", cache="public, max-age=300")),
)
async def metadata(request: Request[Any, Any, Any]) -> Response[bytes]:
    """RFC 8414 authorization server metadata."""
    runtime: Runtime = request.app.state.runtime
    return json_response(metadata_document(runtime), headers=_DOCUMENT_CACHE)


@get("/.well-known/openid-configuration", include_in_schema=False)
async def openid_configuration(request: Request[Any, Any, Any]) -> Response[bytes]:
    """OpenID Connect Discovery 1.0, 4: the OpenID Provider configuration."""
    runtime: Runtime = request.app.state.runtime
    return json_response(openid_document(runtime), headers=_DOCUMENT_CACHE)
