"""The one-statement paths on PostgreSQL (a refresh rotation, its transactional fallback, the code
exchange) reach every row by its key, whatever the planner knows of the tables.

A connection keeps each statement prepared, and PostgreSQL settles on one generic plan for it
after a few executions. On a fresh database (no statistics: autovacuum off, or not run yet) the
planner has to guess the tables' sizes; the statements used to join the token to its family in a
way the planner could turn around, and then each rotation read every family (found by
``bench/token_load.sh``: rotations slowed with every run, from 694 to 93 per second). Each lookup
is now an equality on a primary or unique key with a value already found (an InitPlan or a
correlated subquery), which the planner answers with the index on a table it knows nothing of.
This test holds every plan, generic and custom, to index scans only, on tables never analyzed.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from issuer.store import refresh_pg, signin_pg

ROTATE_TYPES = "bigint, varchar, bytea, varchar, bytea, bigint, text[], text[], text"
ROTATE_ARGS = "1, 'a', '\\x00', 'c', '\\x01', 10, NULL, '{read}', NULL"
CONSUME_TYPES = "bigint, varchar, bytea, varchar, bytea, bigint"
CONSUME_ARGS = "1, 'a', '\\x00', 'c', '\\x01', 10"
EXCHANGE_TYPES = "bigint, bytea, varchar, text, varchar, varchar, bytea, bigint, bigint"
EXCHANGE_ARGS = "1, '\\x00', 'c', 'https://a/cb', 'x', 'f', '\\x01', 10, 20"

STATEMENTS = {
    "rotate": (refresh_pg._ROTATE, ROTATE_TYPES, ROTATE_ARGS),
    "consume": (refresh_pg._CONSUME, CONSUME_TYPES, CONSUME_ARGS),
    "exchange": (signin_pg._EXCHANGE, EXCHANGE_TYPES, EXCHANGE_ARGS),
}


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection[tuple[str]]]:
    with psycopg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"), autocommit=True) as c:
        never_analyzed = c.execute(
            "SELECT relname FROM pg_class WHERE relname IN ('refresh_families', 'refresh_tokens', "
            "'users', 'clients', 'browser_sessions', 'authorization_codes') AND reltuples >= 0"
        ).fetchall()
        assert never_analyzed == [], f"the test needs tables without statistics: {never_analyzed}"
        yield c


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize("name", list(STATEMENTS))
def test_every_row_is_reached_by_an_index_on_tables_without_statistics(
    conn: psycopg.Connection[tuple[str]], name: str, mode: str
) -> None:
    sql, types, args = STATEMENTS[name]
    conn.execute(f"SET plan_cache_mode = {mode}")
    conn.execute(f"PREPARE hot ({types}) AS {sql}")
    plan = [row[0] for row in conn.execute(f"EXPLAIN EXECUTE hot ({args})")]
    assert any("Index Scan using" in line for line in plan), plan  # the plan was read
    assert not [line for line in plan if "Seq Scan" in line], "\n".join(plan)
