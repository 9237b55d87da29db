"""Alembic migrations from an empty database to head, on SQLite and PostgreSQL, and the schema check."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect

from issuer.runtime import Runtime, SchemaOutOfDate
from issuer.store import migrations
from issuer.store.tables import metadata
from tests.conftest import make_settings


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_upgrade_from_empty_creates_every_table(backend, tmp_path: Path, request, material) -> None:
    url = (
        f"sqlite:///{tmp_path / 'empty.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("empty_pg_url")
    )
    await asyncio.to_thread(migrations.upgrade, url)
    runtime = Runtime(make_settings(url, tmp_path), material=material)
    try:
        async with runtime.db.transaction() as conn:
            assert await migrations.current(conn) == migrations.head()
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        assert set(metadata.tables) <= tables
        await asyncio.to_thread(migrations.upgrade, url)  # idempotent
    finally:
        await runtime.close()


async def test_postgresql_is_not_upgraded_behind_the_operators_back(
    empty_pg_url, tmp_path: Path, material
) -> None:
    runtime = Runtime(make_settings(empty_pg_url, tmp_path), material=material)
    try:
        with pytest.raises(SchemaOutOfDate, match="issuer db upgrade"):
            await runtime.start()
    finally:
        await runtime.close()


async def test_the_embedded_sqlite_database_is_created_on_start(tmp_path: Path, material) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    runtime = Runtime(make_settings(url, tmp_path), material=material)
    try:
        await runtime.start()
        assert runtime.keyring.signer.kid
    finally:
        await runtime.close()
