"""Backup and restore: the database and the two keys are the whole state.

``pg_dump`` of a running deployment, ``pg_restore`` into a fresh database, an issuer started on it
with the same ``ISSUER_KEY_ENCRYPTION_KEY`` and ``ISSUER_HMAC_KEY`` and an EMPTY Redis (a
throwaway ``redis-server``): every key, family and revocation is in force. Restored with another
HMAC key, client secrets no longer match: that key is part of the backup.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import jwt

from tests import support
from tests.revocation.support import Deployment, RedisServer, active, login, refresh, revoke, until


def _dump_and_restore(source_url: str, tmp: Path) -> tuple[str, str]:
    dump = tmp / "issuer.dump"
    subprocess.run(["pg_dump", "--format=custom", "--file", str(dump), source_url], check=True, timeout=120)
    name = f"issuer_restored_{os.getpid()}_{secrets.token_hex(4)}"
    url = support.pg_create(name)
    subprocess.run(
        ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", url, str(dump)], check=True, timeout=120
    )
    return name, url


def test_restore_from_pg_dump_with_an_empty_redis(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_URL="https://issuer.test",
        ISSUER_RATE_LIMIT_PASSWORD="0",  # one user logs in many times from one address
        **key_env,
    )
    before = Deployment(env, tmp_path)
    with before.stack:
        app = before.client("app", "password", "refresh_token")
        rs = before.client("rs", "client_credentials", introspect=True)
        before.user("alice")
        one = before.serve("before")
        live = login(one.url, app)
        live = refresh(one.url, app, live["refresh_token"]).json()  # a family one rotation in
        revoked_access = login(one.url, app)["access_token"]
        assert revoke(one.url, app, revoked_access).status_code == 200  # by jti
        revoked_family = login(one.url, app)
        assert revoke(one.url, app, revoked_family["refresh_token"]).status_code == 200
        reused = login(one.url, app)
        successor = refresh(one.url, app, reused["refresh_token"]).json()
        refresh(one.url, app, successor["refresh_token"])
        assert refresh(one.url, app, reused["refresh_token"]).json()["error"] == "invalid_grant"  # reuse
        before.cli("keys", "rotate", "--force")  # two keys: the retired one still verifies `live`
        # the server takes the new key up when the announcement reaches it (Redis pub/sub)
        assert until(lambda: len(support.get(one.url + "/.well-known/jwks.json").json()["keys"]) == 2)
        jwks = support.get(one.url + "/.well-known/jwks.json").json()

    name, restored_url = _dump_and_restore(pg_url, tmp_path)
    empty_redis = RedisServer(tmp_path).start()
    try:
        restored_env = dict(env, ISSUER_DATABASE_URL=restored_url, ISSUER_REDIS_URL=empty_redis.url)
        after = Deployment(restored_env, tmp_path)
        with after.stack:
            two = after.serve("after")
            assert support.get(two.url + "/readyz").status_code == 200
            # the same JWKS: same kids, same public keys
            assert support.get(two.url + "/.well-known/jwks.json").json() == jwks
            # revocations are in force though Redis started empty (rebuilt from the database)
            assert not active(two.url, rs, revoked_access)
            assert not active(two.url, rs, revoked_family["access_token"])
            assert refresh(two.url, app, revoked_family["refresh_token"]).json()["error"] == "invalid_grant"
            assert not active(two.url, rs, successor["access_token"])  # the family reuse killed
            assert empty_redis.client().exists(f"{redis_prefix}deny:loaded") == 1
            # the live family goes on: its access token is active, its refresh token rotates
            assert active(two.url, rs, live["access_token"])
            rotated = refresh(two.url, app, live["refresh_token"])
            assert rotated.status_code == 200, rotated.text
            claims = jwt.decode(rotated.json()["access_token"], options={"verify_signature": False})
            assert (
                claims["sid"] == jwt.decode(live["access_token"], options={"verify_signature": False})["sid"]
            )
            # the new token is signed by the key that was active at the backup
            kid = jwt.get_unverified_header(rotated.json()["access_token"])["kid"]
            assert kid in {key["kid"] for key in jwks["keys"]}

        # restored with a different HMAC key, no client secret matches any more: back it up too
        wrong = dict(restored_env, ISSUER_HMAC_KEY=support.test_key())
        other = Deployment(wrong, tmp_path)
        with other.stack:
            three = other.serve("wrong-hmac")
            response = support.post(
                three.url + "/token", auth=rs.auth, data={"grant_type": "client_credentials"}
            )
            assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    finally:
        empty_redis.stop()
        support.pg_drop(name)
