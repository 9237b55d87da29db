"""RFC 6749 4.1.3: exchanging an authorization code (with PKCE, RFC 7636 4.5) for the token pair.

The code was issued by the authorization endpoint (:mod:`issuer.http.authorize`) bound to the
client, the redirect URI as the client sent it, the PKCE challenge, the scope, the nonce and the
browser session. The exchange:

* checks what needs no database first: the grant is the client's, the parameters are there, the
  verifier has RFC 7636 4.1 syntax (``invalid_request``) and the code its shape; the ready checks
  run before anything is spent, so that an outage never burns a code;
* spends the code with one conditional update (:meth:`issuer.store.signin.CodeStore.spend`) and,
  in the same transaction, checks its bindings and starts the login: of any number of racing
  exchanges exactly one wins, and a replay that comes while the winner is still in its
  transaction waits for it and then sees what it issued; on PostgreSQL a code whose every
  binding holds is first tried by one self-committing statement that does all of that at once
  (:meth:`issuer.store.signin.CodeStore.exchange`, :mod:`issuer.store.signin_pg`), and only when
  it writes nothing does the transactional path run, unchanged, to refuse and say why;
* a binding that does not match (another client, another redirect URI, a wrong verifier, a
  browser session that has ended, a disabled user) is ``invalid_grant`` and the code stays spent
  (a code that was tried with a wrong verifier is a stolen code: it does not get a second try);
* a code presented again is ``invalid_grant``, and what its first use issued is revoked
  (RFC 6749 4.1.2, RFC 9700 4.2.4) by the ``on_code_replayed`` hooks: the refresh family dies and
  its ``sid`` goes on the denylist, which also kills the access token of a client without the
  ``refresh_token`` grant (its access token carries the same ``sid``).

The answer is the usual pair (the refresh token only for clients with the ``refresh_token``
grant; the family remembers the browser session, so logging out of it ends the family) and an
``id_token`` when ``openid`` was granted (OpenID Connect Core 3.1.3.3).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.clients import ClientRecord
from issuer.errors import InvalidGrant, InvalidRequest
from issuer.grants.base import GrantContext, TokenRequest, TokenResponse, require_grant
from issuer.signin import pkce
from issuer.signin.codes import digest, well_formed_code
from issuer.store.signin import Spend, StoredCode

GRANT_TYPE = "authorization_code"
FAMILY_ID_PREFIX = "sid_"

_UNKNOWN = "unknown authorization code"
_REASONS = {
    Spend.UNKNOWN: _UNKNOWN,
    Spend.EXPIRED: "the authorization code has expired",
    Spend.REPLAYED: "the authorization code was already used; what it issued has been revoked",
}


def _redirect_matches(code: StoredCode, client: ClientRecord, presented: str | None) -> bool:
    """RFC 6749 4.1.3: ``redirect_uri`` identical to the authorization request's. The request may
    have left it out when the client has exactly one registered URI (the code then holds that
    URI); the exchange may leave it out in exactly that case too."""
    if presented is None:
        return client.redirect_uris == (code.redirect_uri,)
    return presented == code.redirect_uri


async def _refusal(
    ctx: GrantContext,
    conn: AsyncConnection,
    code: StoredCode,
    client: ClientRecord,
    redirect_uri: str | None,
    verifier: str,
    now: int,
) -> str | None:
    """Why the spent ``code`` issues nothing, or None when every binding holds."""
    if code.client_id != client.client_id:
        return "the authorization code was issued to another client"
    if not _redirect_matches(code, client, redirect_uri):
        return "redirect_uri differs from the authorization request's"
    if not pkce.verify(verifier, code.code_challenge):
        return "code_verifier does not match the code_challenge"
    # locked until the exchange commits: a logout of this session never misses its family
    session = await ctx.browser_sessions.by_id(conn, code.session_id, lock=True)
    if session is None or not session.live_at(now):
        return "the sign-in this code came from has ended"
    user = await ctx.users.store.by_id(conn, code.subject)
    if user is None or user.disabled_at is not None:
        return "the user may no longer sign in"
    return None


@dataclass(frozen=True, slots=True)
class _Exchange:
    """One exchange request past its syntax checks, with what it issues if it succeeds."""

    client: ClientRecord
    code_digest: bytes
    redirect_uri: str | None  # as presented (None: left out)
    verifier: str  # well-formed (RFC 7636 4.1)
    family_id: str  # the login's id: the refresh family, and the access token's sid
    refresh: str | None  # the first refresh token, for clients with the refresh grant
    now: int


async def _exchange_at_once(ctx: GrantContext, x: _Exchange) -> StoredCode | None:
    """The exchange of a code whose every binding holds, committed by one statement where the
    store can (:meth:`issuer.store.signin.CodeStore.exchange`: PostgreSQL); None when it wrote
    nothing and :func:`_spend_and_check` must decide."""
    # The URI the code must hold (_redirect_matches): the presented one, or when it was left out
    # the one registered URI; with several registered and none presented, no code matches.
    expected = x.redirect_uri
    if expected is None and len(x.client.redirect_uris) == 1:
        expected = x.client.redirect_uris[0]
    if expected is None:
        return None
    return await ctx.codes.exchange(
        ctx.db,
        digest=x.code_digest,
        client_id=x.client.client_id,
        redirect_uri=expected,
        challenge=pkce.s256(x.verifier),  # the verifier is well-formed (checked by the caller)
        family_id=x.family_id,
        refresh_digest=None if x.refresh is None else ctx.refresh_tokens.digest(x.refresh),
        now=x.now,
        idle_ttl=ctx.settings.refresh_idle_ttl,
        absolute_ttl=ctx.settings.refresh_absolute_ttl,
    )


async def _spend_and_check(ctx: GrantContext, x: _Exchange) -> StoredCode:
    """The transactional exchange: spend the code, check its bindings and start the login in one
    transaction; every refusal is ``invalid_grant`` raised after the spend is committed."""
    refusal: str | None = None
    async with ctx.db.transaction() as conn:
        # The spend records what this use issues (the family, or without the refresh grant the
        # access token's sid) for a replay to revoke; a refused use issues nothing under it.
        spent = await ctx.codes.spend(conn, x.code_digest, x.now, x.family_id)
        code = spent.code
        if spent.outcome is Spend.SPENT:
            assert code is not None
            refusal = await _refusal(ctx, conn, code, x.client, x.redirect_uri, x.verifier, x.now)
            if refusal is None:
                if x.refresh is not None:
                    await ctx.refresh_store.start_family(
                        conn,
                        family_id=x.family_id,
                        client_id=x.client.client_id,
                        subject=code.subject,
                        scope=code.scope,
                        digest=ctx.refresh_tokens.digest(x.refresh),
                        now=x.now,
                        idle_ttl=ctx.settings.refresh_idle_ttl,
                        absolute_ttl=ctx.settings.refresh_absolute_ttl,
                        browser_session_id=code.session_id,
                    )
    # The spend is committed from here on, whatever the answer.
    if spent.outcome is Spend.REPLAYED:
        assert code is not None
        for hook in ctx.on_code_replayed:
            await hook(code.family_id, code.subject, code.client_id)
    if spent.outcome is not Spend.SPENT:
        raise InvalidGrant(_REASONS[spent.outcome], detail=f"code {spent.outcome.value}")
    assert code is not None
    if refusal is not None:
        raise InvalidGrant(refusal, detail="code binding")
    return code


async def handle(ctx: GrantContext, request: TokenRequest) -> TokenResponse:
    client = request.client
    require_grant(client, GRANT_TYPE)
    presented = request.require("code")
    verifier = request.require("code_verifier")
    redirect_uri = request.params.get("redirect_uri")
    if not pkce.well_formed_verifier(verifier):
        raise InvalidRequest(
            "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 4.1)"
        )
    if not well_formed_code(presented):
        raise InvalidGrant(_UNKNOWN)
    for ready in ctx.ready_checks:  # an unreachable denylist or no signing key: 503, code unspent
        await ready()

    now = int(ctx.clock())
    code_digest = digest(presented)
    family_id = FAMILY_ID_PREFIX + secrets.token_urlsafe(16)
    refresh = ctx.refresh_tokens.new() if "refresh_token" in client.grant_types else None
    exchange = _Exchange(client, code_digest, redirect_uri, verifier, family_id, refresh, now)
    code = await _exchange_at_once(ctx, exchange) or await _spend_and_check(ctx, exchange)
    for check in ctx.session_checks:  # the denylist: a log-out-everywhere or a revoked client
        await check(family_id, code.subject, client.client_id, now)

    ttl = ctx.access_ttl(client)
    token = ctx.minter.mint(
        subject=code.subject,
        client_id=client.client_id,
        audience=client.audience,
        scope=code.scope,
        ttl=ttl,
        sid=family_id,
        now=now,
    )
    id_token = None
    if "openid" in code.scope.split() and ctx.id_tokens is not None:
        id_token = ctx.id_tokens.mint(
            subject=code.subject,
            client_id=client.client_id,
            auth_time=code.auth_time,
            session_id=code.session_id,
            ttl=ttl,
            nonce=code.nonce,
            now=now,
        )
    return TokenResponse(token.token, ttl, code.scope, refresh, id_token)
