"""Fixtures over real services. A missing PostgreSQL or Redis fails the run, naming the service
and the variable that points the tests at one; nothing is skipped silently."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from issuer.keys.material import KeyMaterial, b64encode
from issuer.runtime import Runtime
from issuer.settings import Settings, load
from issuer.store import migrations
from issuer.store.database import Database
from tests import support


def _check_services() -> list[str]:
    problems = []
    try:
        with support.pg_admin() as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        problems.append(
            f"PostgreSQL is not reachable at {support.PG_ADMIN_URL} ({type(error).__name__}: {error}). "
            "Start it, or set ISSUER_TEST_DATABASE_URL to a PostgreSQL URL whose user may CREATE DATABASE."
        )
    try:
        redis.Redis.from_url(support.REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as error:
        problems.append(
            f"Redis is not reachable at {support.REDIS_URL} ({type(error).__name__}: {error}). "
            "Start it, or set ISSUER_TEST_REDIS_URL to a Redis URL the tests may write to."
        )
    return problems


def pytest_sessionstart(session: pytest.Session) -> None:
    problems = _check_services()
    if problems:
        message = "The test suite needs real services:\n  - " + "\n  - ".join(problems)
        pytest.exit(message, returncode=3)


# ---------------------------------------------------------------- key material


@pytest.fixture
def material() -> KeyMaterial:
    return KeyMaterial(kek=secrets.token_bytes(32), hmac_key=secrets.token_bytes(32))


@pytest.fixture
def key_env(material: KeyMaterial) -> dict[str, str]:
    return {
        "ISSUER_KEY_ENCRYPTION_KEY": b64encode(material.kek),
        "ISSUER_HMAC_KEY": b64encode(material.hmac_key),
    }


# ---------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database used as the template for every test's own database."""
    name = f"issuer_tmpl_{os.getpid()}_{secrets.token_hex(3)}"
    url = support.pg_create(name)
    try:
        migrations.upgrade(url)
        yield name
    finally:
        support.pg_drop(name)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name, url = support.pg_clone(pg_template)
    try:
        yield url
    finally:
        support.pg_drop(name)


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    name = f"issuer_e_{os.getpid()}_{secrets.token_hex(4)}"
    url = support.pg_create(name)
    try:
        yield url
    finally:
        support.pg_drop(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'issuer.db'}"
    migrations.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both supported databases."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A :class:`Database` on this test's own migrated database (both backends, as ``database_url``)."""
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.close()


# ---------------------------------------------------------------- runtime and servers


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    env = {
        "ISSUER_DATABASE_URL": database_url,
        "ISSUER_KEYS_DIR": str(tmp_path / "keys"),
        "ISSUER_PASSWORD_HASH_MEMORY_KIB": "8192",
        "ISSUER_PASSWORD_HASH_TIME_COST": "1",
        # tests log one user in many times from one address; tests/observe enables the limits
        "ISSUER_RATE_LIMIT_PASSWORD": "0",
        "ISSUER_RATE_LIMIT_PASSWORD_ADDRESS": "0",
        "ISSUER_RATE_LIMIT_PASSWORD_GLOBAL": "0",
        "ISSUER_PASSWORD_HASH_QUEUE": "100000",
    }
    return load(env, **overrides)


@pytest.fixture
async def runtime(database_url: str, tmp_path: Path, material: KeyMaterial) -> AsyncIterator[Runtime]:
    live = Runtime(make_settings(database_url, tmp_path), material=material)
    await live.start()
    try:
        yield live
    finally:
        await live.close()


@pytest.fixture
def server_env(sqlite_url: str, tmp_path: Path, key_env: dict[str, str]) -> dict[str, str]:
    return support.issuer_env(sqlite_url, tmp_path / "keys", **key_env)


@pytest.fixture
def server(server_env: dict[str, str], tmp_path: Path) -> Iterator[support.ServerProcess]:
    """``issuer serve`` on the embedded default (SQLite, no Redis), on a free port."""
    with support.running_server(server_env, tmp_path / "server.log") as proc:
        yield proc


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"issuer-test:{os.getpid()}:{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(support.REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
