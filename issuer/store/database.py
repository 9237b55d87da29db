"""The database: one async SQLAlchemy engine over the SQLModel tables, and the outage boundary.

``sqlite:///PATH`` runs on aiosqlite (WAL, ``BEGIN IMMEDIATE`` so that writers queue instead of
failing; the file and its ``-wal``/``-shm``/``-journal`` companions are owner-only, see
:func:`secure_sqlite_file`), ``postgresql://`` on asyncpg. Hot paths use SQLAlchemy Core statements on
:class:`AsyncConnection`, never an ORM session. Driver errors that mean "the database is not
there" become :class:`issuer.errors.TemporarilyUnavailable` here, where they are caught; text the
database cannot store (PostgreSQL refuses a NUL) becomes :class:`issuer.errors.InvalidRequest`, as
a second line behind the edge's syntax checks (:mod:`issuer.http.edge`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from issuer.errors import InvalidRequest, TemporarilyUnavailable

__all__ = ["Database", "async_url", "is_bad_text", "is_outage", "secure_sqlite_file"]

log = logging.getLogger("issuer.store")

# SQLSTATE 22021 character_not_in_repertoire ("invalid byte sequence for encoding UTF8: 0x00"),
# 22P05 untranslatable_character: the value, not the database, is at fault.
BAD_TEXT_SQLSTATES = frozenset({"22021", "22P05"})

SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def async_url(url: str) -> str:
    """Map the operator's URL (``sqlite:///``, ``postgresql://``) to the issuer's drivers."""
    parsed = make_url(
        url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url
    )
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme: {parsed.drivername}")


def secure_sqlite_file(url: str) -> None:
    """Make the SQLite database of ``url`` owner-only (0600), like ``keys/``: it holds password
    hashes, client-secret digests and the encrypted signing keys.

    A missing file is created empty with mode 0600 before SQLite or Alembic opens it (SQLite
    creates ``-wal``, ``-shm`` and ``-journal`` with the mode of the database file, so they follow);
    an existing file or companion that others may read is narrowed to 0600, with a warning. A
    path that cannot be opened is left for SQLite to report. Other URLs are left alone.
    """
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError:
        return
    for suffix in SQLITE_COMPANIONS:
        name = path + suffix
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, 0o600)
                log.warning("%s was readable by others (mode %o): made it 0600", name, mode)
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("cannot make %s owner-only: %s", name, error.strerror)


def is_outage(error: BaseException) -> bool:
    """True when ``error`` says the database cannot be reached, rather than that a query is wrong."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError):
        text = str(error.orig if isinstance(error, exc.DBAPIError) else error).lower()
        # SQLite "database is locked" past busy_timeout is load, not an outage, but the answer is the same.
        return "syntax" not in text and "no such" not in text
    return isinstance(error, OSError | asyncio.TimeoutError | ConnectionError)


def is_bad_text(error: BaseException) -> bool:
    """True when the database refused a value's characters (a NUL on PostgreSQL)."""
    if not isinstance(error, exc.DBAPIError):
        return False
    orig = error.orig
    return getattr(orig, "sqlstate", None) in BAD_TEXT_SQLSTATES or getattr(orig, "pgcode", None) in (
        BAD_TEXT_SQLSTATES
    )


class Database:
    """Owns the engine. ``async with db.transaction() as conn`` is the only way in."""

    def __init__(self, url: str, *, pool_size: int = 10, retry_after: int = 5) -> None:
        self.url = url
        self.retry_after = retry_after
        self.outages = 0  # transactions that met an outage (a metric)
        self.dialect = make_url(async_url(url)).get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            secure_sqlite_file(url)
            kwargs["connect_args"] = {"timeout": 10}
            kwargs["pool_size"] = min(pool_size, 5)
        else:
            kwargs["connect_args"] = {"timeout": 3, "command_timeout": 10, "server_settings": {"jit": "off"}}
            kwargs["pool_size"] = pool_size
            # No overflow: an overflow connection is closed as soon as it is returned, so under
            # load every request beyond the pool would open (and fork a backend for) a new one.
            kwargs["max_overflow"] = 0
            kwargs["pool_timeout"] = 5
            kwargs["pool_pre_ping"] = False
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        if self.dialect == "sqlite":
            _sqlite_pragmas(self.engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; commits on success, rolls back on any error; outages become 503."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (TimeoutError, exc.SQLAlchemyError, OSError) as error:
            if is_outage(error):
                self.outages += 1
                raise TemporarilyUnavailable(detail=f"database: {type(error).__name__}") from error
            if is_bad_text(error):
                raise InvalidRequest(
                    "a parameter holds characters that are not allowed", detail="database refused the text"
                ) from error
            raise

    async def ping(self) -> None:
        async with self.transaction() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions (so BEGIN IMMEDIATE below is honoured).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: no deadlock-prone read-to-write upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
