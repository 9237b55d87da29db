"""Denylist rows: Core statements over the ``denylist`` table (see :mod:`issuer.revocation.denylist`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.tables import Client, DenylistEntry

__all__ = ["DenylistStore"]

T = DenylistEntry.__table__  # type: ignore[attr-defined]
C = Client.__table__  # type: ignore[attr-defined]


class DenylistStore:
    async def insert(
        self, conn: AsyncConnection, *, kind: str, value: str, at: int, exp: int, created_at: int
    ) -> int:
        result = await conn.execute(
            insert(T).values(kind=kind, value=value, at=at, exp=exp, created_at=created_at).returning(T.c.id)
        )
        return int(result.scalar_one())

    async def live(
        self, conn: AsyncConnection, *, now: int, after_id: int = 0, recent_since: int | None = None
    ) -> Sequence[Row[Any]]:
        """Unexpired rows with ``id > after_id`` (or written since ``recent_since``), by id."""
        query = select(T).where(T.c.exp > now)
        if recent_since is not None:
            query = query.where(or_(T.c.id > after_id, T.c.created_at >= recent_since))
        elif after_id:
            query = query.where(T.c.id > after_id)
        return (await conn.execute(query.order_by(T.c.id))).all()

    async def page(self, conn: AsyncConnection, *, after_id: int, now: int, limit: int) -> Sequence[Row[Any]]:
        return (
            await conn.execute(
                select(T).where(T.c.id > after_id, T.c.exp > now).order_by(T.c.id).limit(limit)
            )
        ).all()

    async def prune(self, conn: AsyncConnection, now: int) -> int:
        result = await conn.execute(delete(T).where(T.c.exp <= now))
        return int(result.rowcount)

    async def longest_client_ttl(self, conn: AsyncConnection, client_id: str | None = None) -> int | None:
        query = select(func.max(C.c.access_token_ttl))
        if client_id is not None:
            query = query.where(C.c.client_id == client_id)
        value = (await conn.execute(query)).scalar()
        return int(value) if value is not None else None
