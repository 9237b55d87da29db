"""Alembic migrations, shipped inside the package so that ``issuer db upgrade`` works from any install.

Every schema change is a revision under ``versions/``; each passes on SQLite and PostgreSQL
(``tests/store/test_migrations.py``). :func:`upgrade` runs them; :func:`current` and
:func:`head` tell whether a database is up to date.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["config", "current", "head", "upgrade"]

HERE = Path(__file__).parent


def config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations (synchronous; call it from a thread when an event loop is running)."""
    command.upgrade(config(database_url), revision)


def head() -> str | None:
    return ScriptDirectory(str(HERE)).get_current_head()


async def current(conn: AsyncConnection) -> str | None:
    return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
