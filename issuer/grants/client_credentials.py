"""RFC 6749 4.4: the client credentials grant. Access token only (4.4.3: no refresh token)."""

from __future__ import annotations

from issuer.grants.base import GrantContext, TokenRequest, TokenResponse, grant_scope, require_grant

GRANT_TYPE = "client_credentials"


async def handle(ctx: GrantContext, request: TokenRequest) -> TokenResponse:
    client = request.client
    require_grant(client, GRANT_TYPE)
    scope = grant_scope(request.params.get("scope"), client.scopes)
    ttl = ctx.access_ttl(client)
    # RFC 9068 2.2: with no resource owner, `sub` is the client itself.
    token = ctx.minter.mint(
        subject=client.client_id, client_id=client.client_id, audience=client.audience, scope=scope, ttl=ttl
    )
    return TokenResponse(token.token, ttl, scope)
