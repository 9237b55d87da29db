"""Denylist rows: Core statements over the ``denylist`` table (see :mod:`issuer.revocation.denylist`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.clients import ClientStore
from issuer.store.rows import every
from issuer.store.tables import DenylistEntry

__all__ = ["DenylistStore", "StoredEntry"]

T = DenylistEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A ``denylist`` row; ``id`` is the feed cursor."""

    id: int
    kind: str
    value: str
    at: int
    exp: int
    created_at: int


class DenylistStore:
    def __init__(self, clients: ClientStore | None = None) -> None:
        self.clients = clients or ClientStore()

    async def insert(
        self, conn: AsyncConnection, *, kind: str, value: str, at: int, exp: int, created_at: int
    ) -> int:
        result = await conn.execute(
            insert(T).values(kind=kind, value=value, at=at, exp=exp, created_at=created_at).returning(T.c.id)
        )
        return int(result.scalar_one())

    async def live(
        self, conn: AsyncConnection, *, now: int, after_id: int = 0, recent_since: int | None = None
    ) -> list[StoredEntry]:
        """Unexpired rows with ``id > after_id`` (or written since ``recent_since``), by id."""
        query = select(T).where(T.c.exp > now)
        if recent_since is not None:
            query = query.where(or_(T.c.id > after_id, T.c.created_at >= recent_since))
        elif after_id:
            query = query.where(T.c.id > after_id)
        return every(StoredEntry, await conn.execute(query.order_by(T.c.id)))

    async def page(self, conn: AsyncConnection, *, after_id: int, now: int, limit: int) -> list[StoredEntry]:
        query = select(T).where(T.c.id > after_id, T.c.exp > now).order_by(T.c.id).limit(limit)
        return every(StoredEntry, await conn.execute(query))

    async def count_live(self, conn: AsyncConnection, now: int) -> int:
        """How many entries have not expired (a gauge)."""
        return int(
            (await conn.execute(select(func.count()).select_from(T).where(T.c.exp > now))).scalar_one()
        )

    async def prune(self, conn: AsyncConnection, now: int) -> int:
        result = await conn.execute(delete(T).where(T.c.exp <= now))
        return int(result.rowcount)

    async def longest_client_ttl(self, conn: AsyncConnection, client_id: str | None = None) -> int | None:
        """:meth:`ClientStore.longest_access_token_ttl`: how long an entry must outlive its cut-off."""
        return await self.clients.longest_access_token_ttl(conn, client_id)
