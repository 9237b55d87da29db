"""Fixtures of the BFF tests: its own (empty) database on SQLite and PostgreSQL, a session key."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def bff_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The BFF's database, empty (the BFF creates its table), on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bff.db'}"
    return str(request.getfixturevalue("empty_pg_url"))


@pytest.fixture
def session_key() -> bytes:
    return secrets.token_bytes(32)
