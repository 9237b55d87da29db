"""RFC 6749 4.3: the resource owner password credentials grant, for first-party clients only.

Only clients registered with the ``password`` grant may use it. A wrong password and an unknown
username fail alike (``invalid_grant``, same text, same argon2 work), and so does a disabled user.
The login starts a refresh family when the client is also registered for ``refresh_token``.

Tokens are issued only after the login is confirmed against the user's row in the transaction
that starts the family (:meth:`issuer.users.UserDirectory.confirm`): a password change or a
disable that landed during the password check refuses the login, one that lands after it
revokes the family and denylists the access token (its ``iat`` is not after the cut-off).
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
    login = await ctx.users.login(username, password)
    if login is None:
        raise InvalidGrant("invalid username or password")
    subject = login.subject
    ttl = ctx.access_ttl(client)
    now = int(ctx.clock())  # before the confirmation: a later cut-off covers this iat
    if "refresh_token" not in client.grant_types:
        async with ctx.db.transaction() as conn:
            if not await ctx.users.confirm(conn, login):
                raise InvalidGrant("invalid username or password", detail="user changed during login")
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
        if not await ctx.users.confirm(conn, login):
            raise InvalidGrant("invalid username or password", detail="user changed during login")
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
