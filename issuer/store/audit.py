"""The append-only audit trail.

Recording an event can never fail a revocation: every value is bounded first
(:mod:`issuer.store.bounded`: addresses, ids and detail strings fit their columns and are valid
text), and the insert runs in a SAVEPOINT of the caller's transaction, so that should it still
fail (a bug, a constraint) the event alone is lost, loudly logged and counted, while the
revocation it accompanies commits. An outage is not swallowed: the transaction is gone anyway.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.bounded import bounded_text, stored_address
from issuer.store.database import is_outage
from issuer.store.rows import every
from issuer.store.tables import AuditEvent

__all__ = ["AuditStore", "StoredEvent"]

T = AuditEvent.__table__  # type: ignore[attr-defined]
DETAIL_TEXT_CHARS = 200  # each string of an event's detail
log = logging.getLogger("issuer.audit")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An ``audit_events`` row; ``detail`` is its JSON text."""

    id: int
    at: int
    event: str
    subject: str | None
    client_id: str | None
    family_id: str | None
    address: str | None
    detail: str


def _bounded_detail(value: Any) -> Any:
    if isinstance(value, str):
        return bounded_text(value, DETAIL_TEXT_CHARS)
    if isinstance(value, list | tuple):
        return [_bounded_detail(item) for item in value]
    if isinstance(value, dict):
        return {str(k)[:DETAIL_TEXT_CHARS]: _bounded_detail(v) for k, v in value.items()}
    return value


class AuditStore:
    def __init__(self) -> None:
        self.failures = 0  # events that could not be recorded (a metric; should stay 0)

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
    ) -> bool:
        """Append one event in a SAVEPOINT of ``conn``'s transaction; False (logged) if it failed.

        Detail keys ending in ``_from`` are addresses and are stored like ``address``.
        """
        values = {
            "at": at,
            "event": event[:100],
            "subject": bounded_text(subject, 200),
            "client_id": bounded_text(client_id, 64),
            "family_id": bounded_text(family_id, 64),
            "address": stored_address(address),
            "detail": json.dumps(
                {
                    key: stored_address(value)
                    if key.endswith("_from") and isinstance(value, str)
                    else _bounded_detail(value)
                    for key, value in detail.items()
                },
                sort_keys=True,
                separators=(",", ":"),
            ),
        }
        try:
            async with conn.begin_nested():
                await conn.execute(insert(T).values(**values))
        except (exc.SQLAlchemyError, ValueError, TypeError) as error:
            if is_outage(error):
                raise
            self.failures += 1
            log.error("audit event %s not recorded (%s)", values["event"], type(error).__name__)
            return False
        return True

    async def since(self, conn: AsyncConnection, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        query = select(T).where(T.c.at >= since).order_by(T.c.id).limit(limit)
        return every(StoredEvent, await conn.execute(query))

    async def latest(self, conn: AsyncConnection, limit: int = 50) -> list[StoredEvent]:
        """The last ``limit`` events, oldest first."""
        return every(StoredEvent, await conn.execute(select(T).order_by(T.c.id.desc()).limit(limit)))[::-1]

    async def after(self, conn: AsyncConnection, after_id: int, limit: int = 1000) -> list[StoredEvent]:
        query = select(T).where(T.c.id > after_id).order_by(T.c.id).limit(limit)
        return every(StoredEvent, await conn.execute(query))
