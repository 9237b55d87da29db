"""Alembic migrations from an empty database to head, on SQLite and PostgreSQL, and the schema check;
the `alembic` command in the repository root, and the copy of the migrations the wheel ships."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from issuer.runtime import Runtime, SchemaOutOfDate
from issuer.store import migrations
from issuer.store.tables import metadata
from tests.conftest import make_settings
from tests.support import ROOT


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


# ---------------------------------------------------------------- the alembic command, in a checkout

ALEMBIC = str(Path(sys.executable).with_name("alembic"))


def alembic(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``alembic ARGS`` as a developer runs it: in the repository root (or with ``-c``), no flags."""
    return subprocess.run(
        [ALEMBIC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def without_issuer_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}


def fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    return str(request.getfixturevalue("empty_pg_url"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_alembic_upgrade_head_in_the_repository_root(
    backend, tmp_path: Path, request, material
) -> None:
    url = fresh_url(backend, tmp_path, request)
    env = without_issuer_settings() | {"ISSUER_DATABASE_URL": url}
    upgraded = alembic("upgrade", "head", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade 0001 -> 0002" in upgraded.stderr  # alembic.ini's logging: the usual output
    runtime = Runtime(make_settings(url, tmp_path), material=material)
    try:
        await runtime.check_schema(upgrade_embedded=False)  # the server's check, without its own upgrade
    finally:
        await runtime.close()
    shown = alembic("current", env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"{migrations.head()} (head)" in shown.stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_alembic_check_finds_the_models_and_the_migrations_alike(backend, tmp_path: Path, request) -> None:
    env = without_issuer_settings() | {"ISSUER_DATABASE_URL": fresh_url(backend, tmp_path, request)}
    assert alembic("upgrade", "head", env=env).returncode == 0
    checked = alembic("check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout


def test_alembic_without_issuer_database_url_uses_the_servers_default(tmp_path: Path) -> None:
    """Unset, the URL is the server's default: ``issuer.db`` in the working directory, made 0600."""
    ini = str(ROOT / "alembic.ini")
    upgraded = alembic("-c", ini, "upgrade", "head", env=without_issuer_settings(), cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    database = tmp_path / "issuer.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrations.head(),)]


def test_alembic_names_a_bad_issuer_database_url_in_one_line(tmp_path: Path) -> None:
    env = without_issuer_settings() | {"ISSUER_DATABASE_URL": "mysql://u:hunter2@db/x"}
    failed = alembic("upgrade", "head", env=env)
    assert failed.returncode != 0
    assert "FAILED: ISSUER_DATABASE_URL must start with sqlite:/// or postgresql://" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    assert "hunter2" not in failed.stdout + failed.stderr


# ---------------------------------------------------------------- the migrations in an install


def test_the_checkout_finds_its_own_alembic_directory() -> None:
    assert migrations.script_location() == ROOT / "alembic"


def test_a_wheel_layout_finds_the_packaged_copy_not_the_alembic_library(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    (site / "issuer" / "_alembic").mkdir(parents=True)
    (site / "issuer" / "_alembic" / "env.py").touch()
    (site / "alembic").mkdir()  # the Alembic library: a package, no env.py, no alembic.ini beside it
    (site / "alembic" / "__init__.py").touch()
    assert migrations.locate(site / "issuer") == site / "issuer" / "_alembic"
    (site / "issuer" / "_alembic" / "env.py").unlink()
    with pytest.raises(RuntimeError, match="broken install"):
        migrations.locate(site / "issuer")
    (site / "alembic" / "env.py").touch()  # still not a checkout without alembic.ini
    with pytest.raises(RuntimeError, match="broken install"):
        migrations.locate(site / "issuer")


def test_the_wheel_ships_the_migrations_inside_the_package(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("issuer-*.whl")
    tracked = subprocess.run(
        ["git", "ls-files", "alembic"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "no migrations tracked under alembic/"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = {name for name in names if name.startswith("issuer/_alembic/")}
        assert {f"issuer/_{path}" for path in tracked} <= packaged
        assert not {name for name in names if name.startswith(("alembic/", "issuer/migrations/"))}
        archive.extractall(tmp_path / "site-packages")
    # The packaged copy is what an install finds, and it holds the same head as the checkout.
    location = migrations.locate(tmp_path / "site-packages" / "issuer")
    assert location == tmp_path / "site-packages" / "issuer" / "_alembic"
    assert ScriptDirectory(str(location)).get_current_head() == migrations.head()
