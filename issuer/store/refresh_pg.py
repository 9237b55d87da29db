"""PostgreSQL fast path of refresh rotation: the consume step as one statement.

:meth:`issuer.store.refresh.RefreshStore.rotate` on PostgreSQL first sends the whole rotation as
one self-committing statement (:func:`rotate`, below); only when that cannot decide (see there)
does it send the three writes of a rotation (spend the presented token, touch and lock its
family, insert the successor) as one statement with data-modifying CTEs, in one transaction.
Both run on the asyncpg connection underneath a pooled SQLAlchemy connection (same pool, same
limits): SQLAlchemy's execution layer costs about 200 us of CPU per transaction here, more than
the rest of a rotation. The texts are fixed, so asyncpg keeps them prepared per connection. The
rules of the transactional statement are those of the generic path, statement for statement:

* the token is spent by ``UPDATE ... WHERE used_at IS NULL``: under concurrent presentations the
  row lock makes exactly one ``UPDATE`` match, the others see the row already used;
* the family row is updated (and so locked) only while live (not revoked, not expired, its user
  and client not disabled), which orders the rotation against a concurrent revocation; when it
  is not live the statement inserts no successor and the caller rolls the transaction back, so
  the token is not spent;
* the successor is inserted with its predecessor's scope; the caller then applies ``narrow`` and
  either rolls everything back (it raised) or rewrites the successor's scope when it shrank.

Every row is reached by its key from a value already found: the family by ``id = (SELECT
family_id ...)`` (an InitPlan), the user and the client by correlated subqueries on their primary
keys, not by joins. PostgreSQL settles on one generic plan per prepared statement, and on tables
without statistics (a new database, autovacuum not yet run or off) the joins let it choose a plan
that read every family for each rotation; these shapes leave it only the indexes
(``tests/store/test_pg_plans.py``; docs/operations.md, "PostgreSQL's statistics").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import exc
from sqlalchemy.util import greenlet_spawn

from issuer.errors import TemporarilyUnavailable
from issuer.store.database import Database, is_outage

__all__ = ["consume", "driver_connection", "driver_transaction", "rotate", "set_successor_scope"]

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
    WHERE f.id = (SELECT family_id FROM consumed) AND f.revoked_at IS NULL AND f.expires_at > $1::bigint
      AND (SELECT u.disabled_at FROM users u WHERE u.id = f.subject) IS NULL
      AND (SELECT c.disabled_at FROM clients c WHERE c.client_id = f.client_id) IS NULL
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

# The plain rotation as one statement outside any transaction block: PostgreSQL runs it as its own
# transaction and commits it (synchronously, like any commit) before it answers, so one round trip
# does what BEGIN, the statement and COMMIT did in three. It only ever commits a complete rotation:
#
# * ``presented`` reads the token (live, this client's) and checks the requested scope ($7, NULL
#   when absent) against the token's scope and the client's ($8) in the statement's snapshot;
# * ``family`` updates, so locks, the family only while live (as in _CONSUME); a concurrent
#   revocation or rotation holding the lock is waited for, and the row re-checked after it;
# * ``consumed`` spends the token only under that lock and only if it is still unused (re-checked
#   on the latest row version): of concurrent presentations exactly one matches, and a token whose
#   family is not live is never spent;
# * ``successor`` inserts the successor with the narrowed scope: $9 (the requested scope, formatted
#   by the caller) or, when none was requested, the token's scope within the client's, sorted by
#   code point (COLLATE "C") and space-joined as issuer.tokens.format_scope does.
#
# When any step finds nothing (an unknown, used, expired or foreign token, a family not live, a
# scope that exceeds its ceiling) the statement writes nothing and returns no row; the caller then
# takes the transactional path (_CONSUME), which classifies the presentation as before.
# $1 now, $2 address, $3 presented digest, $4 client_id, $5 successor digest, $6 idle ttl,
# $7 requested scopes or NULL, $8 the client's scopes, $9 the requested scope formatted or NULL
_ROTATE = """
WITH presented AS (
    SELECT t.family_id FROM refresh_tokens AS t
    WHERE t.digest = $3::bytea AND t.used_at IS NULL AND t.client_id = $4::varchar
      AND t.expires_at > $1::bigint
      AND ($7::text[] IS NULL OR ($7::text[] <@ string_to_array(t.scope, ' ') AND $7::text[] <@ $8::text[]))
), family AS (
    UPDATE refresh_families AS f SET last_used_at = $1::bigint
    WHERE f.id = (SELECT family_id FROM presented) AND f.revoked_at IS NULL AND f.expires_at > $1::bigint
      AND (SELECT u.disabled_at FROM users u WHERE u.id = f.subject) IS NULL
      AND (SELECT c.disabled_at FROM clients c WHERE c.client_id = f.client_id) IS NULL
    RETURNING f.id, f.subject, f.expires_at, f.created_at
), consumed AS (
    UPDATE refresh_tokens AS t SET used_at = $1::bigint, used_from = $2::varchar
    FROM family
    WHERE t.digest = $3::bytea AND t.used_at IS NULL AND t.family_id = family.id
    RETURNING t.family_id, t.scope, family.subject, family.expires_at, family.created_at
), successor AS (
    INSERT INTO refresh_tokens (digest, family_id, client_id, scope, issued_at, expires_at)
    SELECT $5::bytea, consumed.family_id, $4::varchar,
           COALESCE($9::text, array_to_string(ARRAY(
               SELECT DISTINCT s COLLATE "C" FROM unnest(string_to_array(consumed.scope, ' ')) AS s
               WHERE s = ANY($8::text[]) ORDER BY 1), ' ')),
           $1::bigint, LEAST($1::bigint + $6::bigint, consumed.expires_at)
    FROM consumed
    RETURNING scope
)
SELECT consumed.family_id, consumed.scope AS presented_scope, successor.scope, consumed.subject,
       consumed.expires_at, consumed.created_at
FROM consumed CROSS JOIN successor
"""

_SET_SCOPE = "UPDATE refresh_tokens SET scope = $1::text WHERE digest = $2::bytea"


@asynccontextmanager
async def driver_connection(db: Database) -> AsyncIterator[Any]:
    """The asyncpg connection of a pooled connection, outside any transaction block (each statement
    commits by itself); outages become 503. A connection that failed is invalidated, so the pool
    does not hand it out again."""
    try:
        # The pool's connection without an engine Connection around it (its events and
        # execution options are for SQL that SQLAlchemy sends; this sends its own).
        pooled = await db.engine.raw_connection()
    except (TimeoutError, exc.SQLAlchemyError, OSError) as error:  # checking a connection out
        if is_outage(error):
            raise TemporarilyUnavailable(detail=f"database: {type(error).__name__}") from error
        raise
    try:
        yield pooled.driver_connection
    except _DRIVER_OUTAGES as error:
        await greenlet_spawn(pooled.invalidate)
        raise TemporarilyUnavailable(detail=f"database: {type(error).__name__}") from error
    finally:
        # Back to the pool: its reset rolls back nothing (no adapter transaction was begun, and
        # asyncpg's own transaction block has ended), so this needs no greenlet.
        pooled.close()


@asynccontextmanager
async def driver_transaction(db: Database) -> AsyncIterator[Any]:
    """One transaction on the asyncpg connection of a pooled connection; outages become 503.

    Commits when the block succeeds, rolls back on any error.
    """
    async with driver_connection(db) as driver, driver.transaction():
        yield driver


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


async def rotate(
    db: Database,
    *,
    digest: bytes,
    successor_digest: bytes,
    client_id: str,
    address: str | None,
    now: int,
    idle_ttl: int,
    wanted: frozenset[str] | None,
    ceiling: frozenset[str],
    successor_scope: str | None,
) -> Any:
    """The whole plain rotation, committed, in one round trip (see _ROTATE); the row, or None when
    it wrote nothing and the caller must take the transactional path.

    ``wanted`` is the requested scope (None when absent), ``ceiling`` the client's scopes and
    ``successor_scope`` the requested scope formatted (None when absent). The row has
    ``family_id``, ``presented_scope`` and ``scope`` (the successor's), and ``subject``,
    ``expires_at``, ``created_at`` of the family.
    """
    async with driver_connection(db) as driver:
        return await driver.fetchrow(
            _ROTATE,
            now,
            address,
            digest,
            client_id,
            successor_digest,
            idle_ttl,
            None if wanted is None else sorted(wanted),
            sorted(ceiling),
            successor_scope,
        )


async def set_successor_scope(driver: Any, successor_digest: bytes, scope: str) -> None:
    await driver.execute(_SET_SCOPE, scope, successor_digest)
