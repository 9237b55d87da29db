"""Signing-key rows: Core statements over the ``signing_keys`` table (see :mod:`issuer.keys`).

Every change of the ring runs in one transaction that first takes :meth:`KeyStore.lock`, then
reads the ring again and writes (:mod:`issuer.keys.rotation`); at most one key is ``active``,
enforced by a unique partial index. Private keys are stored sealed (:func:`issuer.keys.ring.seal`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.keys.plan import KeyInfo
from issuer.store.rows import every
from issuer.store.tables import SigningKey

__all__ = ["KeyState", "KeyStore", "SealedKey"]

T = SigningKey.__table__  # type: ignore[attr-defined]
#: ``pg_advisory_xact_lock`` key of the key ring (any constant; "KEYRING" in ASCII).
_PG_LOCK = 0x4B4559_52494E47


@dataclass(frozen=True, slots=True)
class SealedKey:
    """A key with its public JWK (JSON text) and its sealed private key (empty once revoked)."""

    kid: str
    alg: str
    state: str
    public_jwk: str
    private_key: bytes
    kek_id: str


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key's state and its dates (a gauge)."""

    state: str
    created_at: int
    state_changed_at: int


class KeyStore:
    async def lock(self, conn: AsyncConnection) -> None:
        """Serialise changes of the ring until ``conn``'s transaction ends."""
        if conn.dialect.name == "postgresql":
            await conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK)))
        # SQLite: the transaction began with BEGIN IMMEDIATE (issuer.store.database): writers queue.

    async def load(self, conn: AsyncConnection) -> list[KeyInfo]:
        """Every key, oldest first."""
        query = select(
            T.c.kid,
            T.c.alg,
            T.c.state,
            T.c.kek_id,
            T.c.created_at,
            T.c.state_changed_at,
            T.c.activated_at,
            T.c.retired_at,
        ).order_by(T.c.created_at, T.c.kid)
        return every(KeyInfo, await conn.execute(query))

    async def sealed(self, conn: AsyncConnection, states: tuple[str, ...] | None = None) -> list[SealedKey]:
        """Keys with their material (of ``states`` only, when given), newest first."""
        query = select(T.c.kid, T.c.alg, T.c.state, T.c.public_jwk, T.c.private_key, T.c.kek_id)
        if states is not None:
            query = query.where(T.c.state.in_(states))
        return every(SealedKey, await conn.execute(query.order_by(T.c.created_at.desc(), T.c.kid)))

    async def active_kid(self, conn: AsyncConnection) -> str | None:
        return (await conn.execute(select(T.c.kid).where(T.c.state == "active"))).scalar()

    async def state_of(self, conn: AsyncConnection, kid: str) -> str | None:
        return (await conn.execute(select(T.c.state).where(T.c.kid == kid))).scalar()

    async def states(self, conn: AsyncConnection, among: tuple[str, ...]) -> list[KeyState]:
        """The keys in one of the states ``among``: their states and dates."""
        query = select(T.c.state, T.c.created_at, T.c.state_changed_at).where(T.c.state.in_(among))
        return every(KeyState, await conn.execute(query))

    async def insert(
        self,
        conn: AsyncConnection,
        *,
        kid: str,
        alg: str,
        public_jwk: dict[str, Any],
        sealed: bytes,
        kek_id: str,
        state: str,
        now: int,
    ) -> None:
        """A new key in ``state``; an ``active`` one while another is active breaks the unique index."""
        await conn.execute(
            insert(T).values(
                kid=kid,
                alg=alg,
                state=state,
                public_jwk=json.dumps(public_jwk, sort_keys=True),
                private_key=sealed,
                kek_id=kek_id,
                created_at=now,
                state_changed_at=now,
                activated_at=now if state == "active" else None,
                retired_at=None,
            )
        )

    async def retire_active(self, conn: AsyncConnection, now: int) -> None:
        await conn.execute(
            update(T)
            .where(T.c.state == "active")
            .values(state="retired", retired_at=now, state_changed_at=now)
        )

    async def activate(self, conn: AsyncConnection, kid: str, now: int) -> bool:
        """``next`` key ``kid`` becomes active; False when it is no longer a ``next`` key."""
        result = await conn.execute(
            update(T)
            .where(T.c.kid == kid, T.c.state == "next")
            .values(state="active", activated_at=now, state_changed_at=now)
        )
        return bool(result.rowcount == 1)

    async def revoke(self, conn: AsyncConnection, kid: str, now: int) -> None:
        """``kid`` becomes ``revoked`` and its sealed private key is wiped."""
        await conn.execute(
            update(T)
            .where(T.c.kid == kid)
            .values(state="revoked", state_changed_at=now, retired_at=now, private_key=b"")
        )

    async def reseal(self, conn: AsyncConnection, kid: str, sealed: bytes, kek_id: str) -> None:
        """``kid``'s private key, sealed again under the key-encryption key ``kek_id``."""
        await conn.execute(update(T).where(T.c.kid == kid).values(private_key=sealed, kek_id=kek_id))

    async def delete(self, conn: AsyncConnection, kid: str) -> None:
        await conn.execute(delete(T).where(T.c.kid == kid))
