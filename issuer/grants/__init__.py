"""Grant handlers and their registry (RFC 6749 section 4 and 6).

Each grant is one module exposing ``GRANT_TYPE`` and ``async def handle(ctx, request) ->
TokenResponse``; the token endpoint looks the handler up in :data:`REGISTRY` and never branches
on the grant type. Adding a grant adds a module and a line here, nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from issuer.grants import authorization_code, client_credentials, password, refresh_token
from issuer.grants.base import GrantContext, TokenRequest, TokenResponse

__all__ = ["REGISTRY", "GrantContext", "GrantHandler", "TokenRequest", "TokenResponse"]

GrantHandler = Callable[[GrantContext, TokenRequest], Awaitable[TokenResponse]]

REGISTRY: Mapping[str, GrantHandler] = {
    module.GRANT_TYPE: module.handle
    for module in (authorization_code, client_credentials, password, refresh_token)
}
