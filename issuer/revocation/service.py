"""Revocation (RFC 7009), introspection (RFC 7662) and operators' session revocation.

Plain async functions over the stores, the key ring and :mod:`issuer.revocation.denylist`; the HTTP layer
(:mod:`issuer.http.revocation`) and the CLI (:mod:`issuer.cli.sessions`) only parse and render.

* Revoking a refresh token revokes its whole family (the refresh tokens, in the database) and
  denylists the family's ``sid`` (its live access tokens). Revoking an access token denylists its
  ``jti``; its refresh family is left alone (RFC 7009 2.1 allows either).
* A client revokes only its own tokens (RFC 7009 2.1: the server "verifies whether the token was
  issued to the client making the revocation request"); anything else is a silent no-op, as is an
  unknown, malformed, expired or already revoked token (RFC 7009 2.2: 200 either way).
* Introspection answers ``{"active": false}`` and nothing else for any token that is unknown,
  expired, revoked, denylisted, not signed by a key of our JWKS, or not ours (RFC 7662 2.2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.clients import ClientDirectory, ClientRecord
from issuer.errors import InvalidGrant
from issuer.keys.ring import KeyRing
from issuer.revocation.denylist import Denylist
from issuer.store.audit import AuditStore
from issuer.store.database import Database
from issuer.store.refresh import FamilyStore, RefreshLookup, StoredFamily
from issuer.store.signin import SessionStore
from issuer.tokens import RefreshTokens
from issuer_verify.core import InvalidToken, VerificationKey, decode, expired, load_jwks

__all__ = ["AccessTokenView", "Revocation", "SessionsRevoked"]

CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass(frozen=True, slots=True)
class AccessTokenView:
    """An access token whose signature, ``typ`` and ``iss`` checked out (expiry not yet judged)."""

    claims: dict[str, Any]
    kid: str


@dataclass(frozen=True, slots=True)
class SessionsRevoked:
    """What an operator's revocation did: the denylist entry, the families it ended and (a
    subject's) the browser sessions it ended."""

    kind: str
    value: str
    at: int
    until: int
    families: tuple[str, ...]
    browser_sessions: tuple[str, ...] = ()


class Revocation:
    def __init__(
        self,
        *,
        issuer: str,
        db: Database,
        keyring: KeyRing,
        clients: ClientDirectory,
        refresh_store: FamilyStore,
        refresh_tokens: RefreshTokens,
        denylist: Denylist,
        audit: AuditStore,
        clock: Callable[[], float] = time.time,
        clock_skew: int = 0,
        browser_sessions: SessionStore | None = None,
    ) -> None:
        self.issuer = issuer
        self.browser_sessions = browser_sessions or SessionStore()
        self.db = db
        self.keyring = keyring
        self.clients = clients
        self.refresh_store = refresh_store
        self.refresh_tokens = refresh_tokens
        self.denylist = denylist
        self.audit = audit
        self.clock = clock
        self.clock_skew = clock_skew  # seconds other instances' clocks may be ahead of ours
        self._keys: dict[str, VerificationKey] = {}
        self._keys_etag: str | None = None
        self.unknown_kids = 0  # tokens whose kid is not in the JWKS (a metric)

    # ------------------------------------------------------------------ reading tokens

    def _published_keys(self) -> dict[str, VerificationKey]:
        if self._keys_etag != self.keyring.jwks_etag:
            self._keys, self._keys_etag = load_jwks(self.keyring.jwks), self.keyring.jwks_etag
        return self._keys

    def read_access_token(self, token: str) -> AccessTokenView | None:
        """Our access token (signed by a published, unrevoked key of the ring), or None.

        The verifier's own rules decide (:func:`issuer_verify.core.decode`: shape, ``typ``, the
        key's algorithm, signature, ``iss``, required claims), against the ring's JWKS and with
        no audience: any of our tokens may be introspected or revoked. Expiry is the caller's
        (:meth:`expired`): revocation acts on expired tokens too. ``iat`` may be ahead of our
        clock by ``clock_skew`` (minted by an instance whose clock is ahead)."""
        try:
            kid, claims = decode(
                token,
                self._published_keys(),
                issuer=self.issuer,
                audiences=None,
                now=self.clock(),
                leeway=self.clock_skew,
                check_expiry=False,
            )
        except InvalidToken as error:
            if error.reason == "unknown_key":
                self.unknown_kids += 1
            return None
        if self.keyring.is_revoked(kid):
            return None
        return AccessTokenView(claims, kid)

    @staticmethod
    def expired(view: AccessTokenView, now: float) -> bool:
        """Whether the token has expired at ``now`` (no leeway: the issuer's own clock)."""
        return expired(view.claims["exp"], now, 0)

    async def _refresh_row(self, token: str) -> RefreshLookup | None:
        if not self.refresh_tokens.well_formed(token):
            return None
        async with self.db.transaction() as conn:
            return await self.refresh_store.lookup(conn, self.refresh_tokens.digest(token))

    # ------------------------------------------------------------------ RFC 7662

    async def introspect(self, token: str, hint: str | None = None) -> dict[str, Any]:
        """RFC 7662 2.2 response body for ``token``."""
        now = int(self.clock())
        order = (
            ("refresh_token", "access_token")
            if hint == "refresh_token"
            else ("access_token", "refresh_token")
        )
        for kind in order:
            if kind == "access_token":
                view = self.read_access_token(token)
                if view is not None:
                    return await self._introspect_access(view, now)
            else:
                row = await self._refresh_row(token)
                if row is not None:
                    return await self._introspect_refresh(row, now)
        return {"active": False}

    async def _introspect_access(self, view: AccessTokenView, now: int) -> dict[str, Any]:
        claims = view.claims
        if self.expired(view, now) or await self.denylist.is_revoked(claims, view.kid):
            return {"active": False}
        body: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        for name in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti"):
            if name in claims:
                body[name] = claims[name]
        return body

    async def _introspect_refresh(self, row: RefreshLookup, now: int) -> dict[str, Any]:
        live = (
            row.used_at is None
            and row.revoked_at is None
            and row.expires_at > now
            and row.family_expires_at > now
            and row.subject_disabled_at is None
            and row.client_disabled_at is None
        )
        if not live or await self._session_revoked(
            row.family_id, row.subject, row.client_id, row.family_created_at
        ):
            return {"active": False}
        body: dict[str, Any] = {
            "active": True,
            "token_type": "refresh_token",
            "client_id": row.client_id,
            "sub": row.subject,
            "exp": row.expires_at,
            "iat": row.issued_at,
            "iss": self.issuer,
        }
        if row.scope:
            body["scope"] = row.scope
        return body

    async def _session_revoked(self, family_id: str, subject: str, client_id: str, created_at: int) -> bool:
        # The login's tokens all carry sid/sub/client_id; the family began at created_at.
        claims = {"sid": family_id, "sub": subject, "client_id": client_id, "iat": created_at}
        return await self.denylist.is_revoked(claims)

    # ------------------------------------------------------------------ RFC 7009

    async def revoke(self, token: str, hint: str | None, client: ClientRecord, address: str | None) -> str:
        """Revoke ``token`` for ``client``; returns what happened (for logs and tests), never raises
        for a token that is not revocable by this client (RFC 7009 2.2).

        Answered only once the revocation is where every instance checks (Redis): written to the
        database alone (Redis unreachable from this instance, maybe not from the others), it raises
        :class:`~issuer.errors.TemporarilyUnavailable` (503, RFC 7009 2.2.1), and the client's retry
        is answered when the entry has reached Redis. The entry is durable either way."""
        outcome = await self._revoke(token, hint, client, address)
        if outcome in ("access_token", "refresh_token", "already_revoked"):
            await self.denylist.ensure_available()  # pushes what Redis missed first, or raises
        return outcome

    async def _revoke(self, token: str, hint: str | None, client: ClientRecord, address: str | None) -> str:
        order = (
            ("access_token", "refresh_token") if hint == "access_token" else ("refresh_token", "access_token")
        )
        for kind in order:
            if kind == "refresh_token":
                row = await self._refresh_row(token)
                if row is not None:
                    return await self._revoke_refresh(row, client, address)
            else:
                view = self.read_access_token(token)
                if view is not None:
                    return await self._revoke_access(view, client, address)
        return "unknown"

    async def _refuse_foreign(self, client: ClientRecord, owner: str, what: str, address: str | None) -> str:
        now = int(self.clock())
        async with self.db.transaction() as conn:
            await self.audit.record(
                conn,
                at=now,
                event="revocation.refused_foreign_client",
                client_id=client.client_id,
                address=address,
                token=what,
                owner=owner,
            )
        return "foreign"

    async def _revoke_refresh(self, row: RefreshLookup, client: ClientRecord, address: str | None) -> str:
        if row.client_id != client.client_id:
            return await self._refuse_foreign(client, row.client_id, "refresh_token", address)
        revoked = await self.revoke_family(
            row.family_id,
            reason="refresh token revoked by its client (RFC 7009)",
            actor=f"client:{client.client_id}",
            address=address,
        )
        return "refresh_token" if revoked else "already_revoked"

    async def _revoke_access(self, view: AccessTokenView, client: ClientRecord, address: str | None) -> str:
        claims = view.claims
        if claims.get("client_id") != client.client_id:
            return await self._refuse_foreign(client, str(claims.get("client_id")), "access_token", address)
        now = int(self.clock())
        if self.expired(view, now):
            return "expired"
        await self.denylist.add(
            "jti",
            claims["jti"],
            now,
            claims["exp"],
            reason="access token revoked by its client (RFC 7009)",
            actor=f"client:{client.client_id}",
            subject=claims.get("sub"),
            client_id=client.client_id,
            family_id=claims.get("sid"),
            address=address,
        )
        return "access_token"

    # ------------------------------------------------------------------ sessions

    async def revoke_family(
        self, family_id: str, *, reason: str, actor: str, address: str | None = None
    ) -> StoredFamily | None:
        """End one login: its refresh tokens (database) and its access tokens (``sid`` entry).
        Returns the family when this call revoked it, None when it was unknown or already revoked."""
        now = int(self.clock())
        async with self.db.transaction() as conn:
            family = await self.refresh_store.family(conn, family_id)
        if family is None or family.revoked_at is not None:
            return None
        # The denylist first: should the second step fail, a retry repeats both, and meanwhile the
        # refresh grant already refuses a family whose sid is denylisted.
        ttl = await self.denylist.longest_token_ttl(family.client_id)
        await self.denylist.add(
            "sid",
            family_id,
            now,
            now + ttl,
            reason=reason,
            actor=actor,
            subject=family.subject,
            client_id=family.client_id,
            address=address,
        )
        async with self.db.transaction() as conn:
            if not await self.refresh_store.revoke_family(conn, family_id, now, reason):
                return None  # revoked concurrently
            await self._audit_family(conn, family, now, reason, actor, address)
        return family

    async def _audit_family(
        self,
        conn: AsyncConnection,
        family: StoredFamily,
        now: int,
        reason: str,
        actor: str,
        address: str | None,
    ) -> None:
        await self.audit.record(
            conn,
            at=now,
            event="revocation.family",
            subject=family.subject,
            client_id=family.client_id,
            family_id=family.id,
            address=address,
            reason=reason,
            actor=actor,
        )

    async def _revoke_all(
        self,
        kind: str,
        value: str,
        *,
        subject: str | None,
        client_id: str | None,
        reason: str,
        actor: str,
        cover: int = 0,
    ) -> SessionsRevoked:
        now = int(self.clock())
        # The cut-off: access tokens (and logins) issued up to `cutoff` are revoked. `cover` moves it
        # ahead for what other instances may still issue (a client cached as enabled); another
        # instance's clock may run ahead of ours, so its tokens minted before this moment can carry
        # an iat up to clock_skew later: the cut-off covers them too (fail closed).
        cutoff = now + cover + self.clock_skew
        ttl = await self.denylist.longest_token_ttl(client_id)
        # The denylist first: from this second on, every access token issued up to `cutoff` is dead.
        entry = await self.denylist.add(kind, value, cutoff, cutoff + ttl, reason=reason, actor=actor)
        async with self.db.transaction() as conn:
            families = await self.refresh_store.families(
                conn, subject=subject, client_id=client_id, live_at=now
            )
            ended = []
            for family in families:
                if await self.refresh_store.revoke_family(conn, family.id, now, reason):
                    await self._audit_family(conn, family, now, reason, actor, None)
                    ended.append(family.id)
        return SessionsRevoked(kind, value, cutoff, entry.exp, tuple(ended))

    async def revoke_subject(self, subject: str, *, reason: str, actor: str) -> SessionsRevoked:
        """Log out everywhere: every family of ``subject``, every access token issued up to now,
        and every browser session (single sign-on) of ``subject``, so that the next sign-in asks for
        the password again."""
        revoked = await self._revoke_all(
            "sub", subject, subject=subject, client_id=None, reason=reason, actor=actor
        )
        now = int(self.clock())
        async with self.db.transaction() as conn:
            ended = await self.browser_sessions.end_subject(conn, subject, now, reason)
            for session_id in ended:
                await self._audit_browser_session(conn, session_id, subject, now, reason, actor, None)
        return replace(revoked, browser_sessions=tuple(ended))

    async def end_browser_session(
        self, session_id: str, *, reason: str, actor: str, address: str | None = None
    ) -> tuple[str, ...] | None:
        """Log a browser out (RP-initiated logout, an operator): the session ends, and every login
        (refresh family) started through it is revoked with its ``sid`` denylisted.

        Returns the revoked families' ids; None when the session is unknown. A session that had
        already ended still has its families revoked (a retry after a partial failure finishes)."""
        now = int(self.clock())
        async with self.db.transaction() as conn:
            session = await self.browser_sessions.by_id(conn, session_id)
            if session is None:
                return None
            if await self.browser_sessions.end(conn, session_id, now, reason):
                await self._audit_browser_session(
                    conn, session_id, session.subject, now, reason, actor, address
                )
            families = await self.refresh_store.families(conn, browser_session_id=session_id, live_at=now)
        ended = []
        for family in families:
            if await self.revoke_family(family.id, reason=reason, actor=actor, address=address):
                ended.append(family.id)
        return tuple(ended)

    async def _audit_browser_session(
        self,
        conn: AsyncConnection,
        session_id: str,
        subject: str,
        now: int,
        reason: str,
        actor: str,
        address: str | None,
    ) -> None:
        await self.audit.record(
            conn,
            at=now,
            event="revocation.browser_session",
            subject=subject,
            address=address,
            session=session_id,
            reason=reason,
            actor=actor,
        )

    async def revoke_client(
        self, client_id: str, *, reason: str, actor: str, cover: int = 0
    ) -> SessionsRevoked:
        """A compromised client: every family and every access token it was issued up to now.

        ``cover`` moves the cut-off that many seconds into the future: disabling a client uses
        the client cache's TTL, so that tokens issued by instances that still had the client
        cached as enabled are revoked too."""
        if await self.clients.get(client_id) is None:
            raise LookupError(f"no client {client_id!r}")
        return await self._revoke_all(
            "client", client_id, subject=None, client_id=client_id, reason=reason, actor=actor, cover=cover
        )

    # ------------------------------------------------------------------ grant hooks

    async def on_family_revoked(self, family_id: str, subject: str, client_id: str, _expires_at: int) -> None:
        """A refresh token was reused and its family revoked: kill the family's access tokens."""
        now = int(self.clock())
        ttl = await self.denylist.longest_token_ttl(client_id)
        await self.denylist.add(
            "sid",
            family_id,
            now,
            now + ttl,
            reason="refresh token reuse",
            actor="issuer",
            subject=subject,
            client_id=client_id,
        )

    async def on_code_replayed(self, family_id: str | None, subject: str, client_id: str) -> None:
        """An authorization code was presented again: revoke what its first use issued (RFC 6749
        4.1.2). Its refresh family when there is one; otherwise (a client without the
        ``refresh_token`` grant) the access token's ``sid`` alone goes on the denylist. Nothing
        when the first use issued nothing (it failed a binding)."""
        if family_id is None:
            return
        reason = "authorization code replay"
        if await self.revoke_family(family_id, reason=reason, actor="issuer") is not None:
            return
        now = int(self.clock())
        ttl = await self.denylist.longest_token_ttl(client_id)
        await self.denylist.add(
            "sid",
            family_id,
            now,
            now + ttl,
            reason=reason,
            actor="issuer",
            subject=subject,
            client_id=client_id,
        )

    async def check_session(self, family_id: str, subject: str, client_id: str, created_at: int) -> None:
        """Before a refresh issues tokens: the login must not be denylisted (``sid``, or a
        ``sub``/``client`` entry at or after its start). Fails closed when that is unknown."""
        if await self._session_revoked(family_id, subject, client_id, created_at):
            raise InvalidGrant("the refresh token has been revoked", detail="refresh denylisted")

    def metadata(
        self,
        base: str,
        auth_methods: Sequence[str] = CLIENT_AUTH_METHODS,
        revocation_auth_methods: Sequence[str] = (*CLIENT_AUTH_METHODS, "none"),
    ) -> dict[str, Any]:
        """RFC 8414 members for the two endpoints: revocation authenticates as /token does (a
        public client sends its ``client_id`` alone: ``none``); introspection wants a secret."""
        return {
            "revocation_endpoint": f"{base}/revoke",
            "revocation_endpoint_auth_methods_supported": list(revocation_auth_methods),
            "introspection_endpoint": f"{base}/introspect",
            "introspection_endpoint_auth_methods_supported": list(auth_methods),
        }
