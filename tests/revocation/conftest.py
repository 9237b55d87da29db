from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.revocation.support import Deployment


@pytest.fixture
def embedded(sqlite_url: str, tmp_path: Path, key_env: dict[str, str]) -> Iterator[Deployment]:
    """The embedded default: SQLite, no Redis."""
    deployment = Deployment(support.issuer_env(sqlite_url, tmp_path / "keys", **key_env), tmp_path)
    with deployment.stack:
        yield deployment


@pytest.fixture
def cluster(pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]) -> Iterator[Deployment]:
    """Several instances' worth: one PostgreSQL database and Redis (this test's own key prefix)."""
    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_URL="https://issuer.test",  # one issuer, whichever instance answers
        **key_env,
    )
    deployment = Deployment(env, tmp_path)
    with deployment.stack:
        yield deployment
