from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.verify.support import Issuer, register_client

ALGORITHMS = ("ES256", "RS256", "EdDSA")


def start_issuer(server_env: dict[str, str], tmp_path: Path, alg: str) -> Iterator[Issuer]:
    env = dict(server_env, ISSUER_SIGNING_ALG=alg)
    with support.running_server(env, tmp_path / f"server-{alg}.log") as server:
        client_id, secret = register_client(server.env)
        yield Issuer(server, alg, client_id, secret)


@pytest.fixture
def issuer(server_env: dict[str, str], tmp_path: Path) -> Iterator[Issuer]:
    """A running issuer (ES256, the default) and a client_credentials client of it."""
    yield from start_issuer(server_env, tmp_path, "ES256")


@pytest.fixture(params=ALGORITHMS)
def any_issuer(
    request: pytest.FixtureRequest, server_env: dict[str, str], tmp_path: Path
) -> Iterator[Issuer]:
    """A running issuer per supported signing algorithm."""
    yield from start_issuer(server_env, tmp_path, request.param)


@pytest.fixture
def redis_issuer(server_env: dict[str, str], tmp_path: Path, redis_prefix: str) -> Iterator[Issuer]:
    """A running issuer (ES256) with its denylist in Redis under this test's prefix."""
    env = dict(server_env, ISSUER_REDIS_URL=support.REDIS_URL, ISSUER_REDIS_PREFIX=redis_prefix)
    with support.running_server(env, tmp_path / "server.log") as server:
        client_id, secret = register_client(server.env)
        yield Issuer(server, "ES256", client_id, secret)
