"""Browser sign-in records: browser sessions, authorization codes and consents.

- :class:`SessionStore`: the issuer's own browser session (single sign-on). The cookie is 256
  random bits; only its SHA-256 is stored, with the subject, ``auth_time`` and an idle and an
  absolute expiry. Ending a session is a fact with a time and a reason, never a deletion, so that
  what was started in it can be found and revoked.
- :class:`CodeStore`: authorization codes (RFC 6749 4.1.2), stored as SHA-256 digests and spent by
  one conditional update: of two racing exchanges exactly one wins, and a later presentation is
  told apart from an unknown code, so that the caller can revoke what the first use issued
  (RFC 6749 4.1.2: "SHOULD revoke (when possible) all tokens previously issued based on that
  authorization code"; RFC 9700 4.2.4). On PostgreSQL a code whose bindings all hold is
  exchanged by one self-committing statement (:meth:`CodeStore.exchange`,
  :mod:`issuer.store.signin_pg`); everything else goes through :meth:`CodeStore.spend`.
- :class:`ConsentStore`: what a user allowed a client, one scope per row.
- :class:`RequestStore`: pending authorization requests (validated, waiting for login or
  consent), found only by their id together with the digest of the browser's binding cookie.

Times are passed in (``now``), as in every store.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sqlalchemy import ColumnElement, case, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store import signin_pg
from issuer.store.database import Database
from issuer.store.rows import every, one
from issuer.store.tables import AuthorizationCode, AuthorizationRequest, BrowserSession, Consent

__all__ = [
    "CodeSpent",
    "CodeStore",
    "ConsentStore",
    "RequestStore",
    "SessionStore",
    "Spend",
    "StoredCode",
    "StoredConsent",
    "StoredRequest",
    "StoredSession",
]

S = BrowserSession.__table__  # type: ignore[attr-defined]
A = AuthorizationCode.__table__  # type: ignore[attr-defined]
C = Consent.__table__  # type: ignore[attr-defined]
R = AuthorizationRequest.__table__  # type: ignore[attr-defined]

#: Rows one prune deletes at most: pruning runs on the write path, so its cost stays bounded.
PRUNE_BATCH = 200


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A ``browser_sessions`` row."""

    digest: bytes
    id: str
    subject: str
    auth_time: int
    created_at: int
    last_used_at: int
    idle_expires_at: int
    expires_at: int
    ended_at: int | None
    ended_reason: str | None

    def live_at(self, now: int) -> bool:
        return self.ended_at is None and now < self.idle_expires_at and now < self.expires_at


class SessionStore:
    async def create(
        self,
        conn: AsyncConnection,
        *,
        digest: bytes,
        session_id: str,
        subject: str,
        auth_time: int,
        now: int,
        idle_ttl: int,
        absolute_ttl: int,
    ) -> StoredSession:
        expires_at = now + absolute_ttl
        values = {
            "digest": digest,
            "id": session_id,
            "subject": subject,
            "auth_time": auth_time,
            "created_at": now,
            "last_used_at": now,
            "idle_expires_at": min(now + idle_ttl, expires_at),
            "expires_at": expires_at,
            "ended_at": None,
            "ended_reason": None,
        }
        await conn.execute(insert(S).values(**values))
        return StoredSession(**values)  # type: ignore[arg-type]

    async def live(self, conn: AsyncConnection, digest: bytes, now: int) -> StoredSession | None:
        """The session whose cookie has this digest, if it has not ended or expired at ``now``."""
        found = one(StoredSession, (await conn.execute(select(S).where(S.c.digest == digest))).first())
        return found if found is not None and found.live_at(now) else None

    async def touch(self, conn: AsyncConnection, digest: bytes, now: int, idle_ttl: int) -> bool:
        """A use of a live session: its idle expiry moves to ``now + idle_ttl`` (never past the
        absolute one). False when the session is not live (then nothing is written)."""
        result = await conn.execute(
            update(S)
            .where(
                S.c.digest == digest,
                S.c.ended_at.is_(None),
                S.c.idle_expires_at > now,
                S.c.expires_at > now,
            )
            .values(last_used_at=now, idle_expires_at=_least(now + idle_ttl, S.c.expires_at))
        )
        return result.rowcount == 1

    async def by_id(
        self, conn: AsyncConnection, session_id: str, *, lock: bool = False
    ) -> StoredSession | None:
        """The session with this id. With ``lock``, its row is locked ``FOR SHARE`` until the
        transaction ends (PostgreSQL; SQLite has one writer at a time anyway): a concurrent
        :meth:`end` waits for the transaction, or was waited for and is seen. A code exchange
        reads it so (see :mod:`issuer.store.signin_pg`)."""
        query = select(S).where(S.c.id == session_id)
        if lock:
            query = query.with_for_update(read=True)
        return one(StoredSession, (await conn.execute(query)).first())

    async def end(self, conn: AsyncConnection, session_id: str, now: int, reason: str) -> bool:
        """End one session; False when it had already ended (the first end's reason stays)."""
        result = await conn.execute(
            update(S)
            .where(S.c.id == session_id, S.c.ended_at.is_(None))
            .values(ended_at=now, ended_reason=reason)
        )
        return result.rowcount == 1

    async def end_subject(self, conn: AsyncConnection, subject: str, now: int, reason: str) -> list[str]:
        """End every session of ``subject`` that has not ended; returns their ids."""
        ended = await conn.execute(
            update(S)
            .where(S.c.subject == subject, S.c.ended_at.is_(None))
            .values(ended_at=now, ended_reason=reason)
            .returning(S.c.id)
        )
        return sorted(row.id for row in ended)

    async def sessions(
        self, conn: AsyncConnection, subject: str, *, live_at: int | None = None
    ) -> list[StoredSession]:
        """The sessions of ``subject``, newest first; with ``live_at``, only those live then."""
        query = select(S).where(S.c.subject == subject)
        if live_at is not None:
            query = query.where(
                S.c.ended_at.is_(None), S.c.idle_expires_at > live_at, S.c.expires_at > live_at
            )
        return every(StoredSession, await conn.execute(query.order_by(S.c.created_at.desc(), S.c.id)))


def _least(a: int, column: ColumnElement[int]) -> ColumnElement[int]:
    """``min(a, column)`` in SQL that both backends speak (SQLite has no ``LEAST``)."""
    return case((column < a, column), else_=a)


@dataclass(frozen=True, slots=True)
class StoredCode:
    """An ``authorization_codes`` row: everything the code is bound to."""

    digest: bytes
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    nonce: str | None
    session_id: str
    subject: str
    auth_time: int
    created_at: int
    expires_at: int
    used_at: int | None
    family_id: str | None


class Spend(enum.Enum):
    SPENT = "spent"  # this call spent the code: exchange it
    REPLAYED = "replayed"  # spent before: revoke what the first use issued
    EXPIRED = "expired"  # never spent, past its lifetime
    UNKNOWN = "unknown"  # no such code


@dataclass(frozen=True, slots=True)
class CodeSpent:
    outcome: Spend
    code: StoredCode | None  # None only for UNKNOWN


class CodeStore:
    async def create(
        self,
        conn: AsyncConnection,
        *,
        digest: bytes,
        client_id: str,
        redirect_uri: str,
        code_challenge: str,
        scope: str,
        nonce: str | None,
        session_id: str,
        subject: str,
        auth_time: int,
        now: int,
        ttl: int,
    ) -> None:
        await conn.execute(
            insert(A).values(
                digest=digest,
                client_id=client_id,
                redirect_uri=redirect_uri,
                code_challenge=code_challenge,
                scope=scope,
                nonce=nonce,
                session_id=session_id,
                subject=subject,
                auth_time=auth_time,
                created_at=now,
                expires_at=now + ttl,
                used_at=None,
                family_id=None,
            )
        )

    async def exchange(
        self,
        db: Database,
        *,
        digest: bytes,
        client_id: str,
        redirect_uri: str,
        challenge: str,
        family_id: str,
        refresh_digest: bytes | None,
        now: int,
        idle_ttl: int,
        absolute_ttl: int,
    ) -> StoredCode | None:
        """On PostgreSQL, the exchange of a code whose bindings all hold, committed by one
        statement (:mod:`issuer.store.signin_pg`): the code spent with ``family_id`` recorded and,
        with ``refresh_digest``, the family (remembering the code's browser session) and its first
        token started, as :meth:`issuer.store.refresh.RefreshStore.start_family` does. Returns the
        spent code, or None when nothing was written (any binding or condition failed, or the
        database is SQLite): the caller then takes the transactional path (:meth:`spend`), which
        says why.

        ``redirect_uri`` is the one the code must hold, ``challenge`` the S256 of the client's
        (well-formed) PKCE verifier.
        """
        if db.dialect != "postgresql":
            return None
        row = await signin_pg.exchange(
            db,
            digest=digest,
            client_id=client_id,
            redirect_uri=redirect_uri,
            challenge=challenge,
            family_id=family_id,
            refresh_digest=refresh_digest,
            now=now,
            idle_ttl=idle_ttl,
            absolute_ttl=absolute_ttl,
        )
        return None if row is None else StoredCode(**dict(row))

    async def spend(
        self, conn: AsyncConnection, digest: bytes, now: int, family_id: str | None = None
    ) -> CodeSpent:
        """Spend the code once: one conditional update decides (RFC 6749 4.1.2, single use).

        The update itself, not an earlier read, tells the winner (it returns the row only to the
        call that spent it), so of any number of racing exchanges exactly one gets
        :attr:`Spend.SPENT`; the winner's path is that one statement. ``family_id`` is what this
        use is about to issue (the refresh family, or the access token's ``sid``), recorded by
        the same statement for a replay to revoke; the caller writes it in this transaction.
        """
        spent = await conn.execute(
            update(A)
            .where(A.c.digest == digest, A.c.used_at.is_(None), A.c.expires_at > now)
            .values(used_at=now, family_id=family_id)
            .returning(*A.c)
        )
        won = one(StoredCode, spent.first())
        if won is not None:
            return CodeSpent(Spend.SPENT, won)
        # Not spent by this call: one read tells a replay from an expired or an unknown code.
        code = one(StoredCode, (await conn.execute(select(A).where(A.c.digest == digest))).first())
        if code is None:
            return CodeSpent(Spend.UNKNOWN, None)
        return CodeSpent(Spend.REPLAYED if code.used_at is not None else Spend.EXPIRED, code)

    async def prune(self, conn: AsyncConnection, before: int, limit: int | None = None) -> int:
        """Delete codes that expired before ``before`` (at most ``limit`` of them); returns how many."""
        query = delete(A).where(A.c.expires_at < before)
        if limit is not None:
            oldest = select(A.c.digest).where(A.c.expires_at < before).order_by(A.c.expires_at).limit(limit)
            query = delete(A).where(A.c.digest.in_(oldest.scalar_subquery()))
        result = await conn.execute(query)
        return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class StoredConsent:
    """A ``consents`` row: one scope a user allowed one client."""

    subject: str
    client_id: str
    scope: str
    granted_at: int


class ConsentStore:
    async def consents(
        self, conn: AsyncConnection, subject: str, client_id: str | None = None
    ) -> list[StoredConsent]:
        """What ``subject`` consented to (for ``client_id`` only, when given), by client and scope."""
        query = select(C).where(C.c.subject == subject)
        if client_id is not None:
            query = query.where(C.c.client_id == client_id)
        return every(StoredConsent, await conn.execute(query.order_by(C.c.client_id, C.c.scope)))

    async def granted(self, conn: AsyncConnection, subject: str, client_id: str) -> set[str]:
        rows = await conn.execute(select(C.c.scope).where(C.c.subject == subject, C.c.client_id == client_id))
        return {row.scope for row in rows}

    async def grant(
        self, conn: AsyncConnection, subject: str, client_id: str, scopes: Iterable[str], now: int
    ) -> None:
        """Remember consent to each scope; a scope already granted keeps its first grant time."""
        values = [
            {"subject": subject, "client_id": client_id, "scope": scope, "granted_at": now}
            for scope in sorted(set(scopes))
        ]
        if not values:
            return
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        await conn.execute(dialect.insert(C).values(values).on_conflict_do_nothing())

    async def revoke(self, conn: AsyncConnection, subject: str, client_id: str | None = None) -> int:
        """Forget the consents of ``subject`` (to ``client_id`` only, when given); returns how many."""
        query = delete(C).where(C.c.subject == subject)
        if client_id is not None:
            query = query.where(C.c.client_id == client_id)
        return int((await conn.execute(query)).rowcount)


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """An ``authorization_requests`` row: a validated authorization request waiting for the user."""

    id: str
    binding_digest: bytes
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str
    nonce: str | None
    prompt: str | None
    max_age: int | None
    login_hint: str | None
    created_at: int
    expires_at: int

    @property
    def prompts(self) -> frozenset[str]:
        return frozenset((self.prompt or "").split())


class RequestStore:
    """Pending authorization requests. A request is only ever read together with the digest of
    the binding cookie of the browser that made it: another browser's cookie finds nothing."""

    async def create(self, conn: AsyncConnection, request: StoredRequest) -> None:
        values = {name: getattr(request, name) for name in StoredRequest.__slots__}
        await conn.execute(insert(R).values(**values))

    async def get(
        self, conn: AsyncConnection, request_id: str, binding_digest: bytes, now: int
    ) -> StoredRequest | None:
        """The request with this id made by the browser holding this binding, if not expired."""
        row = (
            await conn.execute(
                select(R).where(
                    R.c.id == request_id, R.c.binding_digest == binding_digest, R.c.expires_at > now
                )
            )
        ).first()
        return one(StoredRequest, row)

    async def login_done(self, conn: AsyncConnection, request: StoredRequest) -> StoredRequest:
        """The user entered a password for this request: ``prompt=login`` is satisfied (the rest
        of the prompt, ``consent``, stays). Returns the request as it now is."""
        rest = " ".join(sorted(request.prompts - {"login"})) or None
        await conn.execute(update(R).where(R.c.id == request.id).values(prompt=rest))
        return replace(request, prompt=rest)

    async def delete(self, conn: AsyncConnection, request_id: str) -> bool:
        """Spend the request (a code was issued or an error answered); True when it was there."""
        return int((await conn.execute(delete(R).where(R.c.id == request_id))).rowcount) == 1

    async def prune(self, conn: AsyncConnection, before: int, limit: int = PRUNE_BATCH) -> int:
        """Delete at most ``limit`` requests that expired before ``before``; returns how many."""
        oldest = select(R.c.id).where(R.c.expires_at < before).order_by(R.c.expires_at).limit(limit)
        result = await conn.execute(delete(R).where(R.c.id.in_(oldest.scalar_subquery())))
        return int(result.rowcount)
