"""RFC 6749 6: refreshing, with rotation and reuse detection (RFC 9700 4.14.2; DESIGN.md).

Every use spends the token and issues its successor; the immediate predecessor presented again
inside ``ISSUER_REFRESH_GRACE`` gets the same successor back; any other reuse revokes the whole
family, fires the ``on_family_revoked`` hooks (the denylist kills the family's access tokens by
``sid``) and answers ``invalid_grant``. Scope may shrink, never grow; a token of another client is
``invalid_grant``.
"""

from __future__ import annotations

from issuer.errors import InvalidGrant
from issuer.grants.base import GrantContext, TokenRequest, TokenResponse, require_grant
from issuer.store.refresh import Narrowing, Outcome, Presentation

GRANT_TYPE = "refresh_token"

_REASONS = {
    Outcome.UNKNOWN: "unknown refresh token",
    Outcome.FOREIGN: "the refresh token was issued to another client",
    Outcome.EXPIRED: "the refresh token has expired",
    Outcome.REVOKED: "the refresh token has been revoked",
    Outcome.REUSED: "the refresh token was already used; its login has been revoked",
}


async def handle(ctx: GrantContext, request: TokenRequest) -> TokenResponse:
    client = request.client
    require_grant(client, GRANT_TYPE)
    presented = request.require("refresh_token")
    requested = request.params.get("scope")
    if not ctx.refresh_tokens.well_formed(presented):
        raise InvalidGrant(_REASONS[Outcome.UNKNOWN])
    tokens = ctx.refresh_tokens
    successor = tokens.successor_of(presented)
    now = int(ctx.clock())
    presentation = Presentation(
        digest=tokens.digest(presented),
        successor_digest=tokens.digest(successor),
        client_id=client.client_id,
        address=request.address,
        now=now,
        idle_ttl=ctx.settings.refresh_idle_ttl,
        grace=ctx.settings.refresh_grace,
    )

    # Never beyond the presented token's scope, nor beyond what the client may still have: as
    # data, so that the store may apply it in the rotation's own statement.
    narrow = Narrowing(requested, client.scopes)

    # An unreachable denylist answers 503 before the token is spent. The session check itself
    # stays outside the rotation's transaction: without Redis it may read the database, which
    # must not wait on (SQLite) or take a second pooled connection while the rotation holds one.
    for ready in ctx.ready_checks:
        await ready()
    result = await ctx.refresh_store.rotate(ctx.db, presentation, narrow)
    ctx.refresh_outcomes[result.outcome] += 1
    if result.outcome is Outcome.REUSED:
        assert result.family_id and result.subject and result.family_expires_at
        for hook in ctx.on_family_revoked:
            await hook(result.family_id, result.subject, client.client_id, result.family_expires_at)
    if result.outcome not in (Outcome.ROTATED, Outcome.REPLAYED):
        raise InvalidGrant(_REASONS[result.outcome], detail=f"refresh {result.outcome.value}")
    assert result.family_id and result.subject and result.scope is not None
    for check in ctx.session_checks:  # e.g. the denylist: log-out-everywhere, a revoked client
        await check(result.family_id, result.subject, client.client_id, result.family_created_at or now)
    ttl = ctx.access_ttl(client)
    token = ctx.minter.mint(
        subject=result.subject,
        client_id=client.client_id,
        audience=client.audience,
        scope=result.scope,
        ttl=ttl,
        sid=result.family_id,
        now=now,
    )
    return TokenResponse(token.token, ttl, result.scope, successor)
