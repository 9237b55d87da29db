"""Alembic environment: runs migrations over the issuer's async engine.

Two ways in. ``issuer db upgrade`` (and :mod:`issuer.store.migrations`) passes the database URL in
``config.attributes["database_url"]``; the ``alembic`` command, run in the repository root with
``alembic.ini``, reads ``ISSUER_DATABASE_URL`` the way the server does (:func:`issuer.settings.load`:
same default, the embedded ``sqlite:///issuer.db`` relative to the working directory, and same
errors). Either way the URL is mapped to the issuer's async drivers and a SQLite file is created
owner-only before SQLite opens it.

This directory ships inside the wheel as ``issuer/_alembic``: keep it free of relative imports.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from issuer.settings import SettingsError, load
from issuer.store.database import async_url, secure_sqlite_file
from issuer.store.tables import metadata

config = context.config


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if isinstance(url, str):
        return url
    try:
        return load().database_url
    except SettingsError as error:  # the alembic command prints "FAILED: <the one-line error>"
        raise CommandError(str(error)) from None


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online(url: str) -> None:
    secure_sqlite_file(url)  # created 0600 before SQLite opens it
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if config.config_file_name is not None and "database_url" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)  # alembic.ini's [loggers]

if context.is_offline_mode():
    context.configure(url=async_url(_database_url()), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online(_database_url()))
