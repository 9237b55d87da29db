"""The Alembic migrations, run from Python: ``issuer db upgrade``, the start-up schema check, the tests.

The revisions live in the repository's top-level ``alembic/`` (with ``alembic.ini`` beside it, so
``alembic upgrade head`` works in a checkout); the wheel ships the same directory as
``issuer/_alembic`` so that ``issuer db upgrade`` works from any install. :func:`script_location`
finds whichever of the two this installation has. Every schema change is a revision under
``versions/``; each passes on SQLite and PostgreSQL (``tests/store/test_migrations.py``).
:func:`upgrade` runs them; :func:`current` and :func:`head` tell whether a database is up to date.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

import issuer

__all__ = ["config", "current", "head", "locate", "script_location", "upgrade"]

PACKAGE = Path(issuer.__file__).resolve().parent


def locate(package: Path) -> Path:
    """The Alembic script directory for the ``issuer`` package at ``package``: the wheel's
    ``issuer/_alembic`` (``pyproject.toml``'s ``force-include``), else the checkout's ``alembic/``.

    The checkout's copy is taken only beside an ``alembic.ini`` (an editable install, or a source
    tree on ``sys.path``): in a wheel install ``package.parent`` is ``site-packages``, whose
    ``alembic/`` is the Alembic library itself.
    """
    packaged, checkout = package / "_alembic", package.parent / "alembic"
    if (packaged / "env.py").is_file():
        return packaged
    if (checkout / "env.py").is_file() and (package.parent / "alembic.ini").is_file():
        return checkout
    raise RuntimeError(f"no Alembic migrations in {packaged} or {checkout}: a broken install of issuer")


@cache
def script_location() -> Path:
    """Where this installation's migrations are (see :func:`locate`)."""
    return locate(PACKAGE)


def config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations (synchronous; call it from a thread when an event loop is running)."""
    command.upgrade(config(database_url), revision)


def head() -> str | None:
    return ScriptDirectory(str(script_location())).get_current_head()


async def current(conn: AsyncConnection) -> str | None:
    return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
