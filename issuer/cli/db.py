"""``issuer db upgrade``: apply the Alembic migrations to ``ISSUER_DATABASE_URL``."""

from __future__ import annotations

import asyncio

import click

from issuer.cli.support import command_runtime, run
from issuer.errors import TemporarilyUnavailable

__all__ = ["db"]


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@run
async def db_upgrade() -> None:
    """Apply every pending Alembic migration to ISSUER_DATABASE_URL."""
    from issuer.store import migrations

    async with command_runtime(check_schema=False) as runtime:
        try:
            await asyncio.to_thread(migrations.upgrade, runtime.settings.database_url)
        except Exception as error:
            from issuer.store.database import is_outage

            if is_outage(error) or isinstance(error, OSError):
                raise TemporarilyUnavailable(detail=type(error).__name__) from error
            raise
        async with runtime.db.transaction() as conn:
            click.echo(f"database at revision {await migrations.current(conn)}")
