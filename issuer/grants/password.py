"""RFC 6749 4.3: the resource owner password credentials grant, for first-party clients only.

Only clients registered with the ``password`` grant may use it. A wrong password and an unknown
username fail alike (``invalid_grant``, same text, same argon2 work). The login starts a refresh
family when the client is also registered for ``refresh_token``.
"""

from __future__ import annotations

import secrets

from issuer.errors import InvalidGrant
from issuer.grants.base import GrantContext, TokenRequest, TokenResponse, grant_scope, require_grant

GRANT_TYPE = "password"
FAMILY_ID_PREFIX = "sid_"


async def handle(ctx: GrantContext, request: TokenRequest) -> TokenResponse:
    client = request.client
    require_grant(client, GRANT_TYPE)
    username = request.require("username")
    password = request.require("password")
    scope = grant_scope(request.params.get("scope"), client.scopes)  # before the costly hash
    subject = await ctx.users.authenticate(username, password)
    if subject is None:
        raise InvalidGrant("invalid username or password")
    ttl = ctx.access_ttl(client)
    now = int(ctx.clock())
    if "refresh_token" not in client.grant_types:
        token = ctx.minter.mint(
            subject=subject,
            client_id=client.client_id,
            audience=client.audience,
            scope=scope,
            ttl=ttl,
            now=now,
        )
        return TokenResponse(token.token, ttl, scope)
    family_id = FAMILY_ID_PREFIX + secrets.token_urlsafe(16)
    refresh = ctx.refresh_tokens.new()
    async with ctx.db.transaction() as conn:
        await ctx.refresh_store.start_family(
            conn,
            family_id=family_id,
            client_id=client.client_id,
            subject=subject,
            scope=scope,
            digest=ctx.refresh_tokens.digest(refresh),
            now=now,
            idle_ttl=ctx.settings.refresh_idle_ttl,
            absolute_ttl=ctx.settings.refresh_absolute_ttl,
        )
    token = ctx.minter.mint(
        subject=subject,
        client_id=client.client_id,
        audience=client.audience,
        scope=scope,
        ttl=ttl,
        sid=family_id,
        now=now,
    )
    return TokenResponse(token.token, ttl, scope, refresh)
