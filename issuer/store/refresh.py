"""Refresh-token families and tokens: rotation is one transaction, reuse a fact the store reports.

The contract with :mod:`issuer.grants.refresh_token` (RFC 9700 4.14.2, DESIGN.md):

* consuming a token is a conditional ``UPDATE ... WHERE used_at IS NULL``: its row count decides
  the one winner among concurrent presentations; the winner's successor is inserted in the same
  transaction, and the family row is the lock that orders rotation against revocation;
* the store tells *unknown* from *used*: a used token presented again is either the idempotent
  replay of the immediate predecessor (inside the grace window, successor still unused, from the
  address of the first presentation when both addresses are known: the same successor comes
  back) or *reuse*, which revokes the family in the same transaction;
* any error raised by the caller's ``narrow`` callback (say, a scope that grows) rolls the whole
  transaction back: bad input loses nothing.

Only SHA-256 digests of tokens are stored. Successors are derived from their predecessor with a
keyed HMAC (:meth:`issuer.tokens.RefreshTokens.successor_of`), so a replay can return the same
successor without any token being kept in plaintext.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.errors import InvalidScope
from issuer.store import refresh_pg
from issuer.store.audit import AuditStore
from issuer.store.bounded import stored_address
from issuer.store.database import Database
from issuer.store.rows import every, one
from issuer.store.tables import Client, RefreshFamily, RefreshToken, User
from issuer.tokens import format_scope, parse_scope, scope_within

__all__ = [
    "FamilyStore",
    "LoginStore",
    "Narrowing",
    "Outcome",
    "Presentation",
    "RefreshLookup",
    "RefreshStore",
    "Rotation",
    "StoredFamily",
    "same_address",
    "stored_address",
]

F = RefreshFamily.__table__  # type: ignore[attr-defined]
T = RefreshToken.__table__  # type: ignore[attr-defined]
U = User.__table__  # type: ignore[attr-defined]
C = Client.__table__  # type: ignore[attr-defined]
# A family is live only while its user and its client are not disabled: checked in the rotation's
# own statement (two primary-key probes), so a login that escaped the revocation written by
# `issuer users|clients disable` still cannot rotate.
_SUBJECT_DISABLED = exists().where(U.c.id == F.c.subject, U.c.disabled_at.is_not(None))
_CLIENT_DISABLED = exists().where(C.c.client_id == F.c.client_id, C.c.disabled_at.is_not(None))


def same_address(first: str | None, again: str | None) -> bool:
    """May a replay come from ``again``? False only when both addresses are known and differ
    (``first`` as stored in ``used_from``, ``again`` as presented)."""
    if first is None or again is None:
        return True
    return first == stored_address(again)


class _NotConsumable(Exception):
    """Internal: the presented token is not live; classify it in a fresh transaction."""


class Outcome(enum.Enum):
    ROTATED = "rotated"  # the presented token was live; a new successor was issued
    REPLAYED = "replayed"  # the immediate predecessor inside the grace window; same successor
    REUSED = "reused"  # any other reuse: the family is now revoked
    UNKNOWN = "unknown"
    FOREIGN = "foreign"  # issued to another client
    EXPIRED = "expired"
    REVOKED = "revoked"  # the family was revoked before


@dataclass(frozen=True, slots=True)
class Presentation:
    """One presentation of a refresh token: what the grant knows before the store looks."""

    digest: bytes
    successor_digest: bytes
    client_id: str
    address: str | None
    now: int
    idle_ttl: int
    grace: int


@dataclass(frozen=True, slots=True)
class Narrowing:
    """A rotation's ``narrow`` as data, so that a store can apply it inside its own statement:
    the successor gets the ``requested`` scope (absent: all of it) within the presented token's
    scope and the client's ``ceiling``; beyond that, or malformed, it is ``invalid_scope``."""

    requested: str | None
    ceiling: frozenset[str]

    def __call__(self, current: str) -> str:
        return scope_within(parse_scope(self.requested), frozenset(current.split()) & self.ceiling)


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: Outcome
    family_id: str | None = None
    subject: str | None = None
    scope: str | None = None  # the successor's scope
    family_expires_at: int | None = None
    family_created_at: int | None = None


@dataclass(frozen=True, slots=True)
class StoredFamily:
    """A ``refresh_families`` row: one login; ``id`` is its access tokens' ``sid``."""

    id: str
    client_id: str
    subject: str
    scope: str
    created_at: int
    expires_at: int
    last_used_at: int
    revoked_at: int | None
    revoked_reason: str | None
    browser_session_id: str | None  # the browser session (sign-in) it was started in


@dataclass(frozen=True, slots=True)
class RefreshLookup:
    """A refresh token with its family, and whether its user or client is disabled."""

    family_id: str
    client_id: str
    scope: str
    issued_at: int
    expires_at: int
    used_at: int | None
    used_from: str | None
    subject: str
    family_created_at: int
    family_expires_at: int
    revoked_at: int | None
    subject_disabled_at: int | None
    client_disabled_at: int | None


class LoginStore(Protocol):
    """What the grants need of the refresh store: start a login, rotate its tokens."""

    async def start_family(
        self,
        conn: AsyncConnection,
        *,
        family_id: str,
        client_id: str,
        subject: str,
        scope: str,
        digest: bytes,
        now: int,
        idle_ttl: int,
        absolute_ttl: int,
        browser_session_id: str | None = None,
    ) -> int: ...

    async def rotate(self, db: Database, p: Presentation, narrow: Callable[[str], str]) -> Rotation: ...


class FamilyStore(Protocol):
    """What revocation and introspection need of the refresh store: read and end logins."""

    async def lookup(self, conn: AsyncConnection, digest: bytes) -> RefreshLookup | None: ...

    async def family(self, conn: AsyncConnection, family_id: str) -> StoredFamily | None: ...

    async def families(
        self,
        conn: AsyncConnection,
        *,
        subject: str | None = None,
        client_id: str | None = None,
        live_at: int | None = None,
        browser_session_id: str | None = None,
    ) -> list[StoredFamily]: ...

    async def revoke_family(self, conn: AsyncConnection, family_id: str, now: int, reason: str) -> bool: ...


class RefreshStore:
    """Both :class:`LoginStore` and :class:`FamilyStore`, over the database."""

    def __init__(self, audit: AuditStore | None = None) -> None:
        self.audit = audit or AuditStore()

    async def start_family(
        self,
        conn: AsyncConnection,
        *,
        family_id: str,
        client_id: str,
        subject: str,
        scope: str,
        digest: bytes,
        now: int,
        idle_ttl: int,
        absolute_ttl: int,
        browser_session_id: str | None = None,
    ) -> int:
        """A new login: its family and first token. Returns the token's expiry."""
        family_expires = now + absolute_ttl
        await conn.execute(
            insert(F).values(
                id=family_id,
                client_id=client_id,
                subject=subject,
                scope=scope,
                created_at=now,
                expires_at=family_expires,
                last_used_at=now,
                browser_session_id=browser_session_id,
            )
        )
        expires = min(now + idle_ttl, family_expires)
        await conn.execute(
            insert(T).values(
                digest=digest,
                family_id=family_id,
                client_id=client_id,
                scope=scope,
                issued_at=now,
                expires_at=expires,
            )
        )
        return expires

    async def rotate(self, db: Database, p: Presentation, narrow: Callable[[str], str]) -> Rotation:
        """Consume the presented token and issue its successor, atomically (see the module doc)."""
        try:
            return await self._consume(db, p, narrow)
        except _NotConsumable:
            return await self._classify(db, p)

    async def _consume(self, db: Database, p: Presentation, narrow: Callable[[str], str]) -> Rotation:
        if db.dialect == "postgresql":
            return await self._consume_pg(db, p, narrow)
        async with db.transaction() as conn:
            consumed = (
                await conn.execute(
                    update(T)
                    .where(
                        T.c.digest == p.digest,
                        T.c.used_at.is_(None),
                        T.c.client_id == p.client_id,
                        T.c.expires_at > p.now,
                    )
                    .values(used_at=p.now, used_from=stored_address(p.address))
                    .returning(T.c.family_id, T.c.scope)
                )
            ).first()
            if consumed is not None:
                # The family row orders us against a concurrent revocation (it locks the row).
                family = (
                    await conn.execute(
                        update(F)
                        .where(
                            F.c.id == consumed.family_id,
                            F.c.revoked_at.is_(None),
                            F.c.expires_at > p.now,
                            ~_SUBJECT_DISABLED,
                            ~_CLIENT_DISABLED,
                        )
                        .values(last_used_at=p.now)
                        .returning(F.c.subject, F.c.expires_at, F.c.created_at)
                    )
                ).first()
                if family is None:
                    raise _NotConsumable  # revoked or expired family: roll the consumption back
                scope = narrow(consumed.scope)  # raises: the transaction rolls back, nothing lost
                await conn.execute(
                    insert(T).values(
                        digest=p.successor_digest,
                        family_id=consumed.family_id,
                        client_id=p.client_id,
                        scope=scope,
                        issued_at=p.now,
                        expires_at=min(p.now + p.idle_ttl, family.expires_at),
                    )
                )
                return Rotation(
                    Outcome.ROTATED,
                    consumed.family_id,
                    family.subject,
                    scope,
                    family.expires_at,
                    family.created_at,
                )
        raise _NotConsumable

    async def _consume_pg(self, db: Database, p: Presentation, narrow: Callable[[str], str]) -> Rotation:
        """:meth:`_consume` as one statement (:mod:`issuer.store.refresh_pg`), same transaction rules.

        A plain rotation with a :class:`Narrowing` is one self-committing statement
        (:func:`refresh_pg.rotate`); whatever it does not decide (it wrote nothing) takes the
        transactional path, which narrows in Python and classifies as before.
        """
        if isinstance(narrow, Narrowing):
            try:
                wanted = parse_scope(narrow.requested)
            except InvalidScope:
                pass  # malformed: the transactional path raises it, after looking at the token
            else:
                row = await refresh_pg.rotate(
                    db,
                    digest=p.digest,
                    successor_digest=p.successor_digest,
                    client_id=p.client_id,
                    address=stored_address(p.address),
                    now=p.now,
                    idle_ttl=p.idle_ttl,
                    wanted=wanted,
                    ceiling=narrow.ceiling,
                    successor_scope=None if wanted is None else format_scope(wanted),
                )
                if row is not None:
                    return Rotation(
                        Outcome.ROTATED,
                        row["family_id"],
                        row["subject"],
                        row["scope"],
                        row["expires_at"],
                        row["created_at"],
                    )
        async with refresh_pg.driver_transaction(db) as driver:
            row = await refresh_pg.consume(
                driver,
                digest=p.digest,
                successor_digest=p.successor_digest,
                client_id=p.client_id,
                address=stored_address(p.address),
                now=p.now,
                idle_ttl=p.idle_ttl,
            )
            if row is None or row["subject"] is None:
                raise _NotConsumable  # not live, or its family is not: roll the consumption back
            scope = narrow(row["scope"])  # raises: the transaction rolls back, nothing lost
            if scope != row["scope"]:
                await refresh_pg.set_successor_scope(driver, p.successor_digest, scope)
            return Rotation(
                Outcome.ROTATED, row["family_id"], row["subject"], scope, row["expires_at"], row["created_at"]
            )

    async def _classify(self, db: Database, p: Presentation) -> Rotation:
        """The presented token could not be consumed: say why, and act on reuse."""
        async with db.transaction() as conn:
            row = await self.lookup(conn, p.digest)
            if row is None:
                return Rotation(Outcome.UNKNOWN)
            if row.client_id != p.client_id:
                # RFC 6749 6: the token is bound to the client it was issued to. The owner's
                # family is left alone: the presenting client proved nothing about it.
                await self.audit.record(
                    conn,
                    at=p.now,
                    event="refresh_token.foreign_client",
                    subject=row.subject,
                    client_id=p.client_id,
                    family_id=row.family_id,
                    address=p.address,
                    owner=row.client_id,
                )
                return Rotation(Outcome.FOREIGN, row.family_id, row.subject)
            if row.revoked_at is not None or row.subject_disabled_at or row.client_disabled_at:
                return Rotation(Outcome.REVOKED, row.family_id, row.subject)
            if row.family_expires_at <= p.now:
                return Rotation(Outcome.EXPIRED, row.family_id, row.subject)
            if row.used_at is None:
                return Rotation(Outcome.EXPIRED, row.family_id, row.subject)  # idle expiry
            within_grace = bool(p.grace) and p.now - row.used_at <= p.grace
            # A replay is honoured only from where the token was first presented: another
            # address inside the window is a second party holding the token (issue 14).
            elsewhere = within_grace and not same_address(row.used_from, p.address)
            if within_grace and not elsewhere:
                successor = (
                    await conn.execute(
                        select(T.c.scope, T.c.used_at, T.c.expires_at).where(
                            T.c.digest == p.successor_digest, T.c.family_id == row.family_id
                        )
                    )
                ).first()
                if successor is not None and successor.used_at is None and successor.expires_at > p.now:
                    return Rotation(
                        Outcome.REPLAYED,
                        row.family_id,
                        row.subject,
                        successor.scope,
                        row.family_expires_at,
                        row.family_created_at,
                    )
            # Reuse: revoke the whole family (RFC 9700 4.14.2) and say who presented what, when.
            # The event is recorded in a SAVEPOINT with bounded values (AuditStore.record): it can
            # never roll the revocation back, whatever the presentation's metadata.
            await self.revoke_family(conn, row.family_id, p.now, "refresh token reuse")
            await self.audit.record(
                conn,
                at=p.now,
                event="refresh_token.reuse_detected",
                subject=row.subject,
                client_id=p.client_id,
                family_id=row.family_id,
                address=p.address,
                first_presented_at=row.used_at,
                first_presented_from=row.used_from,
                reused_at=p.now,
                reused_from=p.address,
                replayed_from_another_address=elsewhere,  # inside the grace window
            )
            return Rotation(Outcome.REUSED, row.family_id, row.subject, None, row.family_expires_at)

    async def lookup(self, conn: AsyncConnection, digest: bytes) -> RefreshLookup | None:
        """A refresh token (by digest) with its family, and whether its user or client is disabled
        (``subject_disabled_at``, ``client_disabled_at``): for introspection and revocation."""
        row = (
            await conn.execute(
                select(
                    T.c.family_id,
                    T.c.client_id,
                    T.c.scope,
                    T.c.issued_at,
                    T.c.expires_at,
                    T.c.used_at,
                    T.c.used_from,
                    F.c.subject,
                    F.c.created_at.label("family_created_at"),
                    F.c.expires_at.label("family_expires_at"),
                    F.c.revoked_at,
                    U.c.disabled_at.label("subject_disabled_at"),
                    C.c.disabled_at.label("client_disabled_at"),
                )
                .join(F, F.c.id == T.c.family_id)
                .outerjoin(U, U.c.id == F.c.subject)
                .outerjoin(C, C.c.client_id == F.c.client_id)
                .where(T.c.digest == digest)
            )
        ).first()
        return one(RefreshLookup, row)

    async def family(self, conn: AsyncConnection, family_id: str) -> StoredFamily | None:
        return one(StoredFamily, (await conn.execute(select(F).where(F.c.id == family_id))).first())

    async def revoke_family(self, conn: AsyncConnection, family_id: str, now: int, reason: str) -> bool:
        result = await conn.execute(
            update(F)
            .where(F.c.id == family_id, F.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
        return bool(result.rowcount)

    async def families(
        self,
        conn: AsyncConnection,
        *,
        subject: str | None = None,
        client_id: str | None = None,
        live_at: int | None = None,
        browser_session_id: str | None = None,
    ) -> list[StoredFamily]:
        query = select(F)
        if subject is not None:
            query = query.where(F.c.subject == subject)
        if client_id is not None:
            query = query.where(F.c.client_id == client_id)
        if browser_session_id is not None:
            query = query.where(F.c.browser_session_id == browser_session_id)
        if live_at is not None:
            query = query.where(F.c.revoked_at.is_(None), F.c.expires_at > live_at)
        return every(StoredFamily, await conn.execute(query.order_by(F.c.created_at, F.c.id)))
