"""Many processes, one issuer: two ``issuer serve`` instances on one PostgreSQL and one Redis, and
``issuer serve --workers N``; the health endpoints a load balancer polls.

A client that alternates between instances for a whole refresh chain sees exactly what it would
see on one instance: every rotation works, a grace-window replay on the other instance returns the
same successor, reuse anywhere kills the family everywhere, a revocation on one is in force on the
other, and a key rotation reaches both.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest

from tests import support
from tests.revocation.support import (
    Deployment,
    RedisServer,
    active,
    login,
    refresh,
    revoke,
    until,
)


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _verify(url: str, token: str) -> dict[str, object]:
    """Verify a token with the JWKS of ``url`` (standard PyJWT, as any resource server would)."""
    keys = support.get(url + "/.well-known/jwks.json").json()["keys"]
    jwk = next(k for k in keys if k["kid"] == _kid(token))
    key = jwt.PyJWK(jwk)
    return dict(jwt.decode(token, key.key, algorithms=[jwk["alg"]], audience="https://issuer.test"))


@pytest.fixture
def deployment(pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]) -> Deployment:
    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_URL="https://issuer.test",
        ISSUER_RATE_LIMIT_PASSWORD="0",  # one user logs in many times from one address
        ISSUER_KEY_RELOAD_INTERVAL="3600",  # key changes must come through Redis
        **key_env,
    )
    return Deployment(env, tmp_path)


def test_a_refresh_chain_alternating_between_two_instances(deployment: Deployment) -> None:
    with deployment.stack:
        app = deployment.client("app", "password", "refresh_token")
        rs = deployment.client("rs", "client_credentials", introspect=True)
        deployment.user("alice")
        one, two = deployment.serve("one"), deployment.serve("two")
        urls = [one.url, two.url]

        # a whole chain, every rotation on the other instance than the one before
        tokens = login(one.url, app)
        chain = [tokens["refresh_token"]]
        sid = _verify(one.url, tokens["access_token"])["sid"]
        for step in range(12):
            response = refresh(urls[(step + 1) % 2], app, chain[-1])
            assert response.status_code == 200, response.text
            body = response.json()
            assert _verify(urls[step % 2], body["access_token"])["sid"] == sid  # same family
            chain.append(body["refresh_token"])
        assert len(set(chain)) == len(chain)

        # grace window: the token just rotated, replayed on the other instance, gives the same successor
        replay = refresh(two.url, app, chain[-2])
        assert replay.status_code == 200, replay.text
        assert replay.json()["refresh_token"] == chain[-1]

        # reuse of an older token on instance two kills the family on instance one too
        live_access = refresh(one.url, app, chain[-1]).json()
        assert active(two.url, rs, live_access["access_token"])
        reused = refresh(two.url, app, chain[3])
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        assert refresh(one.url, app, live_access["refresh_token"]).json()["error"] == "invalid_grant"
        assert not active(one.url, rs, live_access["access_token"])
        assert not active(two.url, rs, live_access["access_token"])

        # revocation on one instance is in force on the other, for the chain's current token
        tokens = login(two.url, app)
        step_one = refresh(one.url, app, tokens["refresh_token"]).json()
        assert revoke(two.url, app, step_one["refresh_token"]).status_code == 200
        assert refresh(one.url, app, step_one["refresh_token"]).json()["error"] == "invalid_grant"
        assert not active(one.url, rs, step_one["access_token"])

        # a key rotation reaches both instances (through Redis: the reload interval is an hour)
        tokens = login(one.url, app)
        old_kid = _kid(tokens["access_token"])
        deployment.cli("keys", "rotate", "--force")
        for url in urls:
            assert until(lambda u=url: _kid(login(u, app)["access_token"]) != old_kid)
        new_kids = {_kid(login(url, app)["access_token"]) for url in urls}
        assert len(new_kids) == 1 and old_kid not in new_kids
        # a chain that began before the rotation goes on across both, now signed by the new key
        step_one = refresh(two.url, app, tokens["refresh_token"]).json()
        step_two = refresh(one.url, app, step_one["refresh_token"]).json()
        assert {_kid(step_one["access_token"]), _kid(step_two["access_token"])} == new_kids
        # and the token signed before the rotation still verifies on both JWKS (old key retired, published)
        for url in urls:
            assert _verify(url, tokens["access_token"])["sid"]
            assert active(url, rs, tokens["access_token"])


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_serve_with_workers(deployment: Deployment) -> None:
    with deployment.stack:
        app = deployment.client("app", "password", "refresh_token", "client_credentials")
        deployment.user("alice")
        server = support.ServerProcess(deployment.env, args=("--workers", "2"))
        server.start(deployment.tmp / "workers.log", timeout=60)
        try:
            assert server.proc is not None
            # uvicorn's supervisor forks the workers; every one of them must be a full issuer
            assert until(lambda: len(_children(server.proc.pid)) >= 2, hang_guard=30)  # type: ignore[union-attr]
            workers = _children(server.proc.pid)
            assert until(lambda: support.get(server.url + "/readyz").status_code == 200)
            tokens = login(server.url, app)
            for _ in range(20):  # new connections: the kernel spreads them over the workers
                with httpx.Client() as http:
                    response = http.post(
                        server.url + "/token",
                        auth=app.auth,
                        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                    )
                assert response.status_code == 200, response.text
                tokens = response.json()
            # SIGTERM: the supervisor stops every worker and exits cleanly
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=30) == 0
            assert until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers))
            assert "Traceback" not in server.log()
        finally:
            server.stop()


def test_workers_are_refused_on_sqlite(sqlite_url: str, tmp_path: Path, key_env: dict[str, str]) -> None:
    env = support.issuer_env(sqlite_url, tmp_path / "keys", **key_env)
    result = support.run_cli(env, "serve", "--workers", "2", "--port", str(support.free_port()))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "--workers 2 needs PostgreSQL" in result.stderr


# ---------------------------------------------------------------- health


def test_healthz_and_readyz_on_the_embedded_default(server: support.ServerProcess) -> None:
    health = support.get(server.url + "/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert health.headers["cache-control"] == "no-store"
    ready = support.get(server.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "not configured", "keys": "ok"},
    }


def test_readyz_names_the_failing_part(pg_url: str, tmp_path: Path, key_env: dict[str, str]) -> None:
    """Database cut off, Redis gone, no active key: 503 naming each; /healthz stays 200."""
    pg = support.TcpProxy("127.0.0.1", 5432).start()
    own_redis = RedisServer(tmp_path).start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{pg.port}")
    env = support.issuer_env(
        url, tmp_path / "keys", ISSUER_REDIS_URL=own_redis.url, ISSUER_KEY_RELOAD_INTERVAL="1", **key_env
    )
    deployment = Deployment(env, tmp_path)
    try:
        with deployment.stack:
            server = deployment.serve("ready")

            def state() -> tuple[int, dict[str, object]]:
                response = support.get(server.url + "/readyz", timeout=10)
                return response.status_code, response.json()

            assert state() == (
                200,
                {"status": "ready", "checks": {"database": "ok", "redis": "ok", "keys": "ok"}},
            )

            pg.stop()
            assert until(lambda: state()[0] == 503)
            response = support.get(server.url + "/readyz", timeout=10)
            assert response.headers["retry-after"] == "5"
            body = response.json()
            assert body["failing"] == ["database"]
            assert body["checks"]["database"].startswith("unreachable")
            assert body["checks"]["redis"] == "ok"
            assert "5432" not in response.text and str(pg.port) not in response.text
            assert support.get(server.url + "/healthz").status_code == 200
            pg.start()
            assert until(lambda: state()[0] == 200)

            own_redis.stop()
            assert until(lambda: state()[0] == 503)
            assert state()[1]["failing"] == ["redis"]
            assert support.get(server.url + "/healthz").status_code == 200
            own_redis.start()
            assert until(lambda: state()[0] == 200)

            # a ring with no active key (say, a hand edit gone wrong): no signer after the reload
            with psycopg.connect(pg_url, autocommit=True) as conn:
                kid = conn.execute("SELECT kid FROM signing_keys WHERE state = 'active'").fetchone()[0]  # type: ignore[index]
                conn.execute("UPDATE signing_keys SET state = 'retired' WHERE kid = %s", (kid,))
                assert until(lambda: state()[0] == 503)
                assert state()[1]["failing"] == ["keys"]
                assert state()[1]["checks"]["keys"] == "no active signing key loaded"
                conn.execute("UPDATE signing_keys SET state = 'active' WHERE kid = %s", (kid,))
            assert until(lambda: state()[0] == 200)
    finally:
        own_redis.stop()
        pg.stop()


def test_health_bodies_name_no_address_and_take_no_writes(server: support.ServerProcess) -> None:
    for path in ("/healthz", "/readyz"):
        response = support.get(server.url + path)
        assert response.status_code == 200
        assert "sqlite" not in response.text and "issuer.db" not in response.text
        assert support.post(server.url + path).status_code == 405


def test_workers_without_redis_are_allowed_with_a_warning(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from issuer.deployment import check_workers
    from tests.conftest import make_settings

    settings = make_settings(pg_url, tmp_path)
    with caplog.at_level("WARNING", logger="issuer"):
        check_workers(settings, 3)
    assert "3 workers without ISSUER_REDIS_URL" in caplog.text
    caplog.clear()
    check_workers(settings.replace(redis_url=support.REDIS_URL), 3)
    check_workers(settings, 1)
    assert caplog.text == ""
