"""The append-only audit trail."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.tables import AuditEvent

__all__ = ["AuditStore"]

T = AuditEvent.__table__  # type: ignore[attr-defined]


class AuditStore:
    async def record(
        self,
        conn: AsyncConnection,
        *,
        at: int,
        event: str,
        subject: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
        address: str | None = None,
        **detail: Any,
    ) -> None:
        await conn.execute(
            insert(T).values(
                at=at,
                event=event,
                subject=subject,
                client_id=client_id,
                family_id=family_id,
                address=address,
                detail=json.dumps(detail, sort_keys=True, separators=(",", ":")),
            )
        )

    async def since(self, conn: AsyncConnection, since: int = 0, limit: int = 1000) -> Sequence[Row[Any]]:
        return (await conn.execute(select(T).where(T.c.at >= since).order_by(T.c.id).limit(limit))).all()

    async def latest(self, conn: AsyncConnection, limit: int = 50) -> Sequence[Row[Any]]:
        """The last ``limit`` events, oldest first."""
        rows = (await conn.execute(select(T).order_by(T.c.id.desc()).limit(limit))).all()
        return rows[::-1]

    async def after(self, conn: AsyncConnection, after_id: int, limit: int = 1000) -> Sequence[Row[Any]]:
        return (await conn.execute(select(T).where(T.c.id > after_id).order_by(T.c.id).limit(limit))).all()
