"""Redis losing its data or going away, on a throwaway ``redis-server`` each test starts and kills.

* ``FLUSHALL`` while entries are live: introspection never reports a revoked token active, and
  the entries are back in Redis once the issuer notices (at the next check, or within its
  one-second reconciliation when nothing asks).
* Redis stopped: refresh, introspection and revocation answer 503 with ``Retry-After`` (never
  500, never a spent refresh token; a revocation is durable all the same), and recover when Redis
  is back, empty, with every revocation rebuilt.
* ``ISSUER_DENYLIST_FAIL_OPEN=true``: the documented risk, logged loudly at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests import support
from tests.revocation.support import (
    Deployment,
    RedisServer,
    active,
    introspect_response,
    login,
    redis_server,
    refresh,
    revoke,
    until,
)

PREFIX = "issuer:"


@pytest.fixture
def rds(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def deployment(
    rds: RedisServer, sqlite_url: str, tmp_path: Path, key_env: dict[str, str]
) -> Iterator[Deployment]:
    env = support.issuer_env(
        sqlite_url, tmp_path / "keys", ISSUER_REDIS_URL=rds.url, ISSUER_RETRY_AFTER="7", **key_env
    )
    deployment = Deployment(env, tmp_path)
    with deployment.stack:
        yield deployment


def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def test_flushall_loses_nothing(rds: RedisServer, deployment: Deployment) -> None:
    app = deployment.client("app", "password", "refresh_token")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    deployment.user("alice")
    server = deployment.serve("one")
    revoked_access = [login(server.url, app)["access_token"] for _ in range(3)]
    for token in revoked_access:
        assert revoke(server.url, app, token).status_code == 200
    family = login(server.url, app)
    assert revoke(server.url, app, family["refresh_token"]).status_code == 200
    live = login(server.url, app)
    redis = rds.client()
    try:
        keys = {f"{PREFIX}deny:jti:{_jti(token)}" for token in revoked_access}
        assert all(redis.exists(key) for key in keys)

        redis.flushall()
        # the very next checks already see every revocation (rebuilt before answering)
        for token in [*revoked_access, family["access_token"]]:
            assert not active(server.url, rs, token)
        assert active(server.url, rs, live["access_token"])
        assert all(redis.exists(key) for key in keys)
        assert redis.exists(f"{PREFIX}deny:loaded")

        redis.flushall()
        # nobody asks: the issuer's reconciliation notices on its own and rebuilds
        assert until(lambda: redis.exists(f"{PREFIX}deny:loaded") and all(redis.exists(key) for key in keys))
        assert "denylist rebuilt in Redis from the database" in server.log()
        for token in revoked_access:
            assert not active(server.url, rs, token)
    finally:
        redis.close()


def test_redis_down_is_503_and_recovers(rds: RedisServer, deployment: Deployment, tmp_path: Path) -> None:
    app = deployment.client("app", "password", "refresh_token")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    deployment.user("alice")
    server = deployment.serve("one")
    tokens = login(server.url, app)
    revoked = login(server.url, app)
    assert revoke(server.url, app, revoked["access_token"]).status_code == 200

    rds.stop()
    for response in (
        refresh(server.url, app, tokens["refresh_token"]),
        introspect_response(server.url, rs, tokens["access_token"]),
        introspect_response(server.url, rs, revoked["access_token"]),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable"
        assert response.headers["retry-after"] == "7"
        assert response.headers["cache-control"] == "no-store"
    # A revocation while Redis is down is durable (database), but answered 503 (RFC 7009 2.2.1):
    # acknowledged only once it is where every instance checks (Redis may be down for this one only)
    revoking = revoke(server.url, app, tokens["access_token"])
    assert revoking.status_code == 503, revoking.text
    assert revoking.headers["retry-after"] == "7"

    back = RedisServer(tmp_path, port=rds.port).start()  # the same address, empty
    try:
        assert until(lambda: introspect_response(server.url, rs, revoked["access_token"]).status_code == 200)
        assert not active(server.url, rs, revoked["access_token"])  # rebuilt from the database
        assert not active(server.url, rs, tokens["access_token"])  # revoked during the outage
        assert revoke(server.url, app, tokens["access_token"]).status_code == 200  # the client's retry
        # the refresh token was not spent by the 503: it still works
        rotated = refresh(server.url, app, tokens["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        assert active(server.url, rs, rotated.json()["access_token"])
    finally:
        back.stop()
    assert "Traceback" not in server.log()


def test_fail_open_is_a_loud_choice(rds: RedisServer, deployment: Deployment) -> None:
    app = deployment.client("app", "password", "refresh_token")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    deployment.user("alice")
    server = deployment.serve("one", ISSUER_DENYLIST_FAIL_OPEN="true")
    tokens = login(server.url, app)
    assert revoke(server.url, app, tokens["access_token"]).status_code == 200
    assert not active(server.url, rs, tokens["access_token"])
    rds.stop()
    # the risk, exactly as documented: a revoked token reads as active while Redis is down
    assert active(server.url, rs, tokens["access_token"])
    assert refresh(server.url, app, tokens["refresh_token"]).status_code == 200
    assert "REVOKED TOKENS WILL BE ACCEPTED" in server.log()
