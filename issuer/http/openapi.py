"""The OpenAPI 3.1 document of the HTTP surface, served at ``GET /openapi.json``.

Litestar generates the document once (on the first request for it) from the route handlers; the
controllers read their forms themselves (:mod:`issuer.http.forms`), so each handler names an
:class:`~litestar.openapi.spec.Operation` made here that states what Litestar cannot infer: the
``application/x-www-form-urlencoded`` body and its fields, every status the endpoint can answer
with its JSON error body and headers, and the client authentication (``client_secret_basic`` as
an HTTP Basic security scheme; ``client_secret_post`` as the ``client_id``/``client_secret``
fields). ``tests/http/test_fuzz_openapi.py`` runs schemathesis against a live server to hold the
document and the server to each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

__all__ = ["OPENAPI_PATH", "form_operation", "openapi_config", "read_operation"]

OPENAPI_PATH = "/openapi.json"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_STRING = Schema(type=OpenAPIType.STRING)
_INTEGER = Schema(type=OpenAPIType.INTEGER)
_OBJECT = Schema(type=OpenAPIType.OBJECT)

ERROR_BODY = Schema(
    type=OpenAPIType.OBJECT,
    required=["error", "error_description"],
    properties={"error": _STRING, "error_description": _STRING},
    description="RFC 6749 5.2 error response",
)

_DESCRIPTIONS = {
    304: "not modified (the If-None-Match entity tag matches)",
    400: "invalid_request, invalid_grant, unauthorized_client, unsupported_grant_type, invalid_scope "
    "or unsupported_token_type (RFC 6749 5.2, RFC 7009 2.2.1)",
    401: "invalid_client: client authentication failed (WWW-Authenticate when Basic was tried)",
    403: "unauthorized_client: the client may not use this endpoint",
    413: "invalid_request: the body is larger than ISSUER_MAX_BODY_BYTES",
    415: "invalid_request: the body is not application/x-www-form-urlencoded in UTF-8",
    429: "rate_limited: too many requests in the window; retry after Retry-After seconds",
    503: "temporarily_unavailable: the database or Redis cannot be reached; retry after Retry-After",
}
_NO_STORE = {"Cache-Control": OpenAPIHeader(schema=_STRING, description="no-store")}
_RETRY_AFTER = OpenAPIHeader(schema=_INTEGER, description="seconds", required=True)
_CHALLENGE = OpenAPIHeader(schema=_STRING, description='Basic realm="issuer" when Basic was tried')


def _json(schema: Schema) -> dict[str, OpenAPIMediaType]:
    return {JSON: OpenAPIMediaType(schema=schema)}


def _error(status: int) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] = dict(_NO_STORE)
    if status in (429, 503):
        headers["Retry-After"] = _RETRY_AFTER
    if status == 401:
        headers["WWW-Authenticate"] = _CHALLENGE
    return OpenAPIResponse(description=_DESCRIPTIONS[status], content=_json(ERROR_BODY), headers=headers)


def _object(properties: Mapping[str, Schema], required: Iterable[str] = (), description: str = "") -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        properties=dict(properties),
        required=list(required) or None,
        description=description or None,
    )


def ok_json(schema: Schema, description: str, *, cache: str = "no-store") -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content=_json(schema),
        headers={"Cache-Control": OpenAPIHeader(schema=_STRING, description=cache)},
    )


def ok_empty(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(description=description, headers=dict(_NO_STORE))


def not_modified() -> OpenAPIResponse:
    return OpenAPIResponse(description=_DESCRIPTIONS[304])


# ---------------------------------------------------------------- bodies

TOKEN_RESPONSE = _object(
    {
        "access_token": _STRING,
        "token_type": Schema(type=OpenAPIType.STRING, enum=["Bearer"]),
        "expires_in": _INTEGER,
        "scope": _STRING,
        "refresh_token": _STRING,
        "id_token": _STRING,
    },
    ["access_token", "token_type", "expires_in"],
    "RFC 6749 5.1 access token response",
)
INTROSPECTION = _object(
    {
        "active": Schema(type=OpenAPIType.BOOLEAN),
        "token_type": _STRING,
        "scope": _STRING,
        "client_id": _STRING,
        "sub": _STRING,
        "exp": _INTEGER,
        "iat": _INTEGER,
        "iss": _STRING,
        "aud": Schema(one_of=[_STRING, Schema(type=OpenAPIType.ARRAY, items=_STRING)]),
        "jti": _STRING,
    },
    ["active"],
    'RFC 7662 2.2 introspection response ({"active": false} and nothing else when inactive)',
)
FEED = _object(
    {"entries": Schema(type=OpenAPIType.ARRAY, items=_OBJECT), "next_cursor": _STRING},
    ["entries", "next_cursor"],
    "denylist entries after the cursor, and the cursor to ask from next",
)
JWKS = _object(
    {"keys": Schema(type=OpenAPIType.ARRAY, items=_object({"kty": _STRING, "kid": _STRING}, ["kty", "kid"]))},
    ["keys"],
    "RFC 7517 5 JWK Set (public members only)",
)
METADATA = _object(
    {
        "issuer": _STRING,
        "token_endpoint": _STRING,
        "jwks_uri": _STRING,
        "grant_types_supported": Schema(type=OpenAPIType.ARRAY, items=_STRING),
        "token_endpoint_auth_methods_supported": Schema(type=OpenAPIType.ARRAY, items=_STRING),
        "response_types_supported": Schema(type=OpenAPIType.ARRAY, items=_STRING),
        "authorization_endpoint": _STRING,
        "response_modes_supported": Schema(type=OpenAPIType.ARRAY, items=_STRING),
        "code_challenge_methods_supported": Schema(type=OpenAPIType.ARRAY, items=_STRING),
        "authorization_response_iss_parameter_supported": Schema(type=OpenAPIType.BOOLEAN),
        "end_session_endpoint": _STRING,
        "userinfo_endpoint": _STRING,
        "revocation_endpoint": _STRING,
        "revocation_endpoint_auth_methods_supported": Schema(type=OpenAPIType.ARRAY, items=_STRING),
        "introspection_endpoint": _STRING,
        "introspection_endpoint_auth_methods_supported": Schema(type=OpenAPIType.ARRAY, items=_STRING),
    },
    ["issuer", "token_endpoint", "jwks_uri", "response_types_supported", "authorization_endpoint"],
    "RFC 8414 2 authorization server metadata",
)

CLIENT_FIELDS = {
    "client_id": Schema(type=OpenAPIType.STRING, description="client_secret_post (RFC 6749 2.3.1)"),
    "client_secret": Schema(type=OpenAPIType.STRING, description="client_secret_post (RFC 6749 2.3.1)"),
}
TOKEN_FIELDS = {
    "grant_type": Schema(
        type=OpenAPIType.STRING,
        description="authorization_code, client_credentials, password or refresh_token; others are "
        "unsupported_grant_type",
    ),
    "scope": _STRING,
    "username": _STRING,
    "password": _STRING,
    "refresh_token": _STRING,
    "code": _STRING,
    "redirect_uri": _STRING,
    "code_verifier": _STRING,
    **CLIENT_FIELDS,
}
REVOKE_FIELDS = {
    "token": _STRING,
    "token_type_hint": Schema(type=OpenAPIType.STRING, description="access_token or refresh_token"),
    **CLIENT_FIELDS,
}
FEED_FIELDS = {
    "since": Schema(
        type=OpenAPIType.STRING,
        pattern="^[0-9]{1,10}$",
        description="a cursor of this feed (at most 2**31-1)",
    ),
    **CLIENT_FIELDS,
}

SECURITY: list[dict[str, list[str]]] = [{"client_secret_basic": []}, {}]  # {}: client_secret_post


def form_operation(
    fields: Mapping[str, Schema],
    required: Iterable[str],
    ok: OpenAPIResponse,
    errors: Iterable[int],
    *,
    extra: Mapping[int, OpenAPIResponse] | None = None,
) -> type[Operation]:
    """An Operation whose body is a form of ``fields`` and whose answers are exactly these."""
    body = RequestBody(
        required=True,
        content={FORM: OpenAPIMediaType(schema=_object(fields, required))},
    )
    responses: dict[str, Any] = {"200": ok, **{str(s): r for s, r in (extra or {}).items()}}
    responses.update({str(status): _error(status) for status in errors})

    @dataclass
    class FormOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body
            self.responses = dict(responses)
            self.security = list(SECURITY)

    return FormOperation


def read_operation(
    ok: OpenAPIResponse,
    statuses: Mapping[int, OpenAPIResponse] | None = None,
    errors: Iterable[int] = (),
    *,
    query: Mapping[str, Schema] | None = None,
    secured: bool = False,
) -> type[Operation]:
    """An Operation of a GET, with its query parameters and every answer it can give."""
    parameters = [
        Parameter(name=name, param_in="query", schema=schema) for name, schema in (query or {}).items()
    ]
    responses: dict[str, Any] = {"200": ok, **{str(s): r for s, r in (statuses or {}).items()}}
    responses.update({str(status): _error(status) for status in errors})

    @dataclass
    class ReadOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = list(parameters) or None
            self.responses = dict(responses)
            if secured:
                self.security = [{"client_secret_basic": []}]

    return ReadOperation


def openapi_config(version: str) -> OpenAPIConfig:
    """``GET /openapi.json`` only: no render UI (each would load its assets from elsewhere)."""
    return OpenAPIConfig(
        title="issuer",
        version=version,
        description="OAuth 2 token server: RFC 6749 token endpoint, RFC 7009 revocation, "
        "RFC 7662 introspection, the denylist feed, RFC 8414 metadata and the JWKS.",
        path=OPENAPI_PATH,
        render_plugins=[JsonRenderPlugin(path="/")],
        components=Components(
            security_schemes={
                "client_secret_basic": SecurityScheme(
                    type="http",
                    scheme="basic",
                    description="RFC 6749 2.3.1: form-urlencoded client_id and client_secret, then Basic",
                )
            }
        ),
        use_handler_docstrings=True,
    )
