"""Client records: Core statements over the ``clients`` table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.tables import Client

__all__ = ["ClientStore"]

T = Client.__table__  # type: ignore[attr-defined]


class ClientStore:
    async def get(self, conn: AsyncConnection, client_id: str) -> Row[Any] | None:
        return (await conn.execute(select(T).where(T.c.client_id == client_id))).first()

    async def create(self, conn: AsyncConnection, **values: Any) -> None:
        await conn.execute(insert(T).values(**values))

    async def update(self, conn: AsyncConnection, client_id: str, **values: Any) -> int:
        result = await conn.execute(update(T).where(T.c.client_id == client_id).values(**values))
        return int(result.rowcount)

    async def list(self, conn: AsyncConnection) -> Sequence[Row[Any]]:
        return (await conn.execute(select(T).order_by(T.c.created_at, T.c.client_id))).all()
