"""PostgreSQL fast path of refresh rotation: the consume step as one statement.

:meth:`issuer.store.refresh.RefreshStore.rotate` on PostgreSQL sends the three writes of a
rotation (spend the presented token, touch and lock its family, insert the successor) as one
statement with data-modifying CTEs, in one transaction. The statement runs on the asyncpg
connection underneath a pooled SQLAlchemy connection (same pool, same limits): SQLAlchemy's
execution layer costs about 200 us of CPU per transaction here, more than the rest of a
rotation. The text is fixed, so asyncpg keeps it prepared per connection. The rules are those of
the generic path, statement for statement:

* the token is spent by ``UPDATE ... WHERE used_at IS NULL``: under concurrent presentations the
  row lock makes exactly one ``UPDATE`` match, the others see the row already used;
* the family row is updated (and so locked) only while live (not revoked, not expired, its user
  and client not disabled), which orders the rotation against a concurrent revocation; when it
  is not live the statement inserts no successor and the caller rolls the transaction back, so
  the token is not spent;
* the successor is inserted with its predecessor's scope; the caller then applies ``narrow`` and
  either rolls everything back (it raised) or rewrites the successor's scope when it shrank.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import exc

from issuer.errors import TemporarilyUnavailable
from issuer.store.database import Database, is_outage

__all__ = ["consume", "driver_transaction", "set_successor_scope"]

# Driver errors that mean the connection or the server is gone (not that a statement is wrong).
_DRIVER_OUTAGES = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)

# $1 now, $2 address, $3 presented digest, $4 client_id, $5 successor digest, $6 idle ttl
_CONSUME = """
WITH consumed AS (
    UPDATE refresh_tokens SET used_at = $1::bigint, used_from = $2::varchar
    WHERE digest = $3::bytea AND used_at IS NULL AND client_id = $4::varchar AND expires_at > $1::bigint
    RETURNING family_id, scope
), family AS (
    UPDATE refresh_families AS f SET last_used_at = $1::bigint
    FROM consumed
    WHERE f.id = consumed.family_id AND f.revoked_at IS NULL AND f.expires_at > $1::bigint
      AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = f.subject AND u.disabled_at IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.client_id = f.client_id AND c.disabled_at IS NOT NULL)
    RETURNING f.subject, f.expires_at, f.created_at
), successor AS (
    INSERT INTO refresh_tokens (digest, family_id, client_id, scope, issued_at, expires_at)
    SELECT $5::bytea, consumed.family_id, $4::varchar, consumed.scope, $1::bigint,
           LEAST($1::bigint + $6::bigint, family.expires_at)
    FROM consumed CROSS JOIN family
    RETURNING digest
)
SELECT consumed.family_id, consumed.scope, family.subject, family.expires_at, family.created_at
FROM consumed LEFT JOIN family ON true
"""

_SET_SCOPE = "UPDATE refresh_tokens SET scope = $1::text WHERE digest = $2::bytea"


@asynccontextmanager
async def driver_transaction(db: Database) -> AsyncIterator[Any]:
    """One transaction on the asyncpg connection of a pooled connection; outages become 503.

    Commits when the block succeeds, rolls back on any error. A connection that failed is
    invalidated, so the pool does not hand it out again.
    """
    try:
        async with db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                async with driver.transaction():
                    yield driver
            except _DRIVER_OUTAGES as error:
                await conn.invalidate()
                raise TemporarilyUnavailable(detail=f"database: {type(error).__name__}") from error
    except (TimeoutError, exc.SQLAlchemyError, OSError) as error:  # checking a connection out
        if is_outage(error):
            raise TemporarilyUnavailable(detail=f"database: {type(error).__name__}") from error
        raise


async def consume(
    driver: Any,
    *,
    digest: bytes,
    successor_digest: bytes,
    client_id: str,
    address: str | None,
    now: int,
    idle_ttl: int,
) -> Any:
    """Spend the token, lock its family, insert the successor; the row, or None if not live.

    ``address`` must already be in its stored form (:func:`issuer.store.bounded.stored_address`).

    The row has ``family_id`` and ``scope`` of the spent token, and ``subject``, ``expires_at``,
    ``created_at`` of its family: all None when the family is not live (no successor inserted;
    the caller must roll back).
    """
    return await driver.fetchrow(_CONSUME, now, address, digest, client_id, successor_digest, idle_ttl)


async def set_successor_scope(driver: Any, successor_digest: bytes, scope: str) -> None:
    await driver.execute(_SET_SCOPE, scope, successor_digest)
