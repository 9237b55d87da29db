"""Text the database cannot store is the client's fault (400), not a 500: the store boundary's
second line behind :mod:`issuer.http.edge` (issue 14 point 6)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import ProgrammingError

from issuer.errors import InvalidRequest
from issuer.store.clients import ClientStore
from issuer.store.database import Database


async def test_nul_and_unicode_digits_a_nul_reaching_postgresql_is_invalid_request(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        with pytest.raises(InvalidRequest):
            async with db.transaction() as conn:
                await ClientStore().get(conn, "cli_\x00")
        async with db.transaction() as conn:  # the pool is fine afterwards
            assert await ClientStore().get(conn, "cli_nobody") is None
    finally:
        await db.close()


async def test_other_database_errors_are_not_blamed_on_the_client(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        # the driver's own error, as raised: neither InvalidRequest (400) nor an outage (503)
        with pytest.raises(ProgrammingError, match="no_such_table"):
            async with db.transaction() as conn:
                await conn.exec_driver_sql("SELECT * FROM no_such_table")
    finally:
        await db.close()
