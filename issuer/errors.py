"""The one closed tree of errors a client can cause (RFC 6749 section 5.2), and outages.

::

    IssuerError                     status, code; public description; private detail
    +-- OAuthError                  RFC 6749 5.2 error JSON
    |   +-- InvalidRequest          400 invalid_request (malformed, repeated, missing parameter)
    |   |   +-- UnsupportedMediaType 415 invalid_request
    |   +-- InvalidClient           401 invalid_client (+ WWW-Authenticate when Basic was used)
    |   +-- InvalidGrant            400 invalid_grant
    |   +-- UnauthorizedClient      400 unauthorized_client
    |   |   +-- NotPermitted        403 unauthorized_client (introspection without --can-introspect)
    |   +-- UnsupportedGrantType    400 unsupported_grant_type
    |   +-- InvalidScope            400 invalid_scope
    |   +-- RateLimited             429 rate_limited + Retry-After (not an RFC 6749 code: none fits)
    +-- BearerError                 RFC 6750 3: + WWW-Authenticate: Bearer (the userinfo endpoint)
    |   +-- BearerRequired          401, no error code in the header (RFC 6750 3.1: no credentials)
    |   +-- InvalidToken            401 invalid_token (malformed, expired, revoked, forged, no user)
    |   +-- InsufficientScope       403 insufficient_scope (+ scope= the scope required)
    +-- TemporarilyUnavailable      503 temporarily_unavailable + Retry-After (database/Redis outage)
        +-- Overloaded              503 temporarily_unavailable + Retry-After (password checks shed)

Grants, stores and the key ring raise these; :func:`issuer.http.responses.error_response` renders them, in one
place. ``description`` is shown to the client; ``detail`` is for logs and never holds a secret.
"""

from __future__ import annotations

__all__ = [
    "BearerError",
    "BearerRequired",
    "InsufficientScope",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidToken",
    "IssuerError",
    "NotPermitted",
    "OAuthError",
    "Overloaded",
    "RateLimited",
    "TemporarilyUnavailable",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedMediaType",
]


class IssuerError(Exception):
    status: int = 500
    code: str = "server_error"
    default_description: str = "internal error"

    def __init__(self, description: str | None = None, *, detail: str | None = None) -> None:
        self.description = description or self.default_description
        self.detail = detail
        super().__init__(self.description)


class OAuthError(IssuerError):
    """An RFC 6749 5.2 error response."""


class InvalidRequest(OAuthError):
    """The request is missing a required parameter, includes an unsupported parameter value,
    repeats a parameter, includes multiple credentials, or is otherwise malformed."""

    status = 400
    code = "invalid_request"
    default_description = "malformed request"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    default_description = "Content-Type must be application/x-www-form-urlencoded"


class InvalidClient(OAuthError):
    """Client authentication failed (unknown client, no client authentication included, or
    unsupported authentication method). 401; with ``WWW-Authenticate`` when the client tried
    HTTP Basic (RFC 6749 5.2)."""

    status = 401
    code = "invalid_client"
    default_description = "client authentication failed"

    def __init__(self, description: str | None = None, *, detail: str | None = None, basic: bool = False):
        super().__init__(description, detail=detail)
        self.basic = basic


class InvalidGrant(OAuthError):
    """The provided authorization grant (resource owner credentials) or refresh token is invalid,
    expired, revoked, or was issued to another client."""

    status = 400
    code = "invalid_grant"
    default_description = "the grant is invalid, expired or revoked"


class UnauthorizedClient(OAuthError):
    """The authenticated client is not authorized to use this grant type."""

    status = 400
    code = "unauthorized_client"
    default_description = "the client may not use this grant type"


class NotPermitted(UnauthorizedClient):
    """The client authenticated but may not use this endpoint (RFC 7662 2.1: introspection is
    for clients the server authorised; here those registered with ``--can-introspect``)."""

    status = 403
    default_description = "this client may not use this endpoint"


class UnsupportedGrantType(OAuthError):
    """The grant type is not supported by the authorization server."""

    status = 400
    code = "unsupported_grant_type"
    default_description = "unsupported grant_type"


class InvalidScope(OAuthError):
    """The requested scope is invalid, unknown, malformed, or exceeds what was granted."""

    status = 400
    code = "invalid_scope"
    default_description = "the requested scope is invalid or exceeds what the client may have"


class RateLimited(OAuthError):
    """Too many token requests in the window (per client, or per username and address for the
    password grant): 429 with ``Retry-After``. RFC 6749 5.2 defines no code for this, and
    ``slow_down`` belongs to the device flow (RFC 8628), so the code is ``rate_limited``."""

    status = 429
    code = "rate_limited"
    default_description = "too many requests, retry later"

    def __init__(self, description: str | None = None, *, detail: str | None = None, retry_after: int = 1):
        super().__init__(description, detail=detail)
        self.retry_after = retry_after


class BearerError(IssuerError):
    """A protected resource refusing its Bearer token (RFC 6750 3): the answer carries
    ``WWW-Authenticate: Bearer realm="issuer"`` with ``error`` and ``error_description`` (and
    ``scope`` for :class:`InsufficientScope`). Descriptions stay within RFC 6750 3's character set
    (no ``"`` or ``\\``)."""

    #: the header's ``error`` attribute; None leaves it out (RFC 6750 3.1)
    header_error: str | None = None
    scope: str | None = None


class BearerRequired(BearerError):
    """No Bearer credentials at all (or another scheme): RFC 6750 3.1 says the answer SHOULD NOT
    include an error code in ``WWW-Authenticate``; the JSON body still says ``invalid_token``."""

    status = 401
    code = "invalid_token"
    default_description = "a Bearer access token is required"


class InvalidToken(BearerError):
    """The access token is expired, revoked, malformed, not ours, or names no usable user."""

    status = 401
    code = "invalid_token"
    header_error = "invalid_token"
    default_description = "the access token is invalid"


class InsufficientScope(BearerError):
    """The token is valid but lacks the scope the resource needs (RFC 6750 3.1): 403."""

    status = 403
    code = "insufficient_scope"
    header_error = "insufficient_scope"
    default_description = "the access token lacks the required scope"

    def __init__(self, scope: str, description: str | None = None, *, detail: str | None = None) -> None:
        super().__init__(description, detail=detail)
        self.scope = scope


class TemporarilyUnavailable(IssuerError):
    """A backing service (database, Redis) is unreachable: 503 with ``Retry-After``. Never a 500,
    never a token that skipped a check."""

    status = 503
    code = "temporarily_unavailable"
    default_description = "the service is temporarily unavailable, retry later"


class Overloaded(TemporarilyUnavailable):
    """Load shed before the costly work: more password checks than the global per-second budget
    (``ISSUER_RATE_LIMIT_PASSWORD_GLOBAL``) or than may wait for a hashing slot
    (``ISSUER_PASSWORD_HASH_QUEUE``). 503 with its own short ``Retry-After``, not an outage."""

    default_description = "too many sign-ins right now, retry shortly"

    def __init__(self, description: str | None = None, *, detail: str | None = None, retry_after: int = 1):
        super().__init__(description, detail=detail)
        self.retry_after = retry_after
