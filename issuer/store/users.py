"""User records: Core statements over the ``users`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.rows import one
from issuer.store.tables import User

__all__ = ["StoredUser", "UserStore"]

T = User.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A ``users`` row."""

    id: str
    username: str
    password_hash: str
    created_at: int
    updated_at: int
    disabled_at: int | None


class UserStore:
    async def by_username(self, conn: AsyncConnection, username: str) -> StoredUser | None:
        return one(StoredUser, (await conn.execute(select(T).where(T.c.username == username))).first())

    async def by_id(self, conn: AsyncConnection, user_id: str, *, lock: bool = False) -> StoredUser | None:
        """The user ``user_id``; with ``lock``, its row is locked until the transaction ends
        (PostgreSQL ``FOR UPDATE``; SQLite's writers are serialised by ``BEGIN IMMEDIATE``)."""
        query = select(T).where(T.c.id == user_id)
        return one(StoredUser, (await conn.execute(query.with_for_update() if lock else query)).first())

    async def set_disabled(
        self, conn: AsyncConnection, user_id: str, disabled_at: int | None, now: int
    ) -> None:
        await conn.execute(update(T).where(T.c.id == user_id).values(disabled_at=disabled_at, updated_at=now))

    async def create(self, conn: AsyncConnection, **values: Any) -> None:
        await conn.execute(insert(T).values(**values))

    async def set_password_hash(
        self, conn: AsyncConnection, user_id: str, password_hash: str, now: int
    ) -> None:
        await conn.execute(
            update(T).where(T.c.id == user_id).values(password_hash=password_hash, updated_at=now)
        )
