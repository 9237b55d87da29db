"""ISSUER_REDIS_URL on each topology: one server, Redis Sentinel, Redis Cluster.

The URL forms parse strictly (and settings refuse bad ones without echoing a password); then the
whole revocation path runs on a real Sentinel setup (through a failover) and a real three-master
Cluster (through a FLUSHALL): two issuer instances, /revoke on one, /introspect on the other, a
resource server's denylist copy (issuer_verify's ``RedisDenylist``) fed by pub/sub, /readyz.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from issuer import redis_conn
from issuer.settings import SettingsError, load
from issuer_verify.denylist import RedisDenylist
from tests import support
from tests.deploy.topologies import SERVICE, cluster_setup, sentinel_setup
from tests.revocation.support import Deployment, active, login, refresh, revoke, until


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "service", "db", "password"),
    [
        ("redis://127.0.0.1:6379/2", "single", (), None, 0, None),
        ("unix:///run/redis.sock", "single", (), None, 0, None),
        (
            "redis+sentinel://10.0.0.1,10.0.0.2:26380/main",
            "sentinel",
            (("10.0.0.1", 26379), ("10.0.0.2", 26380)),
            "main",
            0,
            None,
        ),
        ("redis+sentinel://:s3cret@h1:1/main/3", "sentinel", (("h1", 1),), "main", 3, "s3cret"),
        ("redis+sentinel://u:p%40ss@[::1]:26379/main", "sentinel", (("::1", 26379),), "main", 0, "p@ss"),
        (
            "redis+cluster://n1:7000,n2:7001,n3",
            "cluster",
            (("n1", 7000), ("n2", 7001), ("n3", 6379)),
            None,
            0,
            None,
        ),
        ("redis+cluster://:pw@n1:7000/", "cluster", (("n1", 7000),), None, 0, "pw"),
    ],
)
def test_url_forms(
    url: str,
    kind: str,
    nodes: tuple[tuple[str, int], ...],
    service: str | None,
    db: int,
    password: str | None,
) -> None:
    target = redis_conn.parse(url)
    assert (target.kind, target.nodes, target.service, target.db, target.password) == (
        kind,
        nodes,
        service,
        db,
        password,
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379", "must start with"),
        ("redis+sentinel://:hunter2@h1:26379", "service name"),
        ("redis+sentinel://:hunter2@h1:26379/main/x", "database must be a number"),
        ("redis+sentinel://:hunter2@h1:99999/main", "out of range"),
        ("redis+sentinel://:hunter2@h 1/main", "HOST[:PORT]"),
        ("redis+cluster://:hunter2@h1:7000/3", "no database number"),
        ("redis+cluster://:hunter2@h1:7000?db=1", "does not take"),
        ("redis+cluster://:hunter2@,h1:7000", "HOST[:PORT]"),
    ],
)
def test_bad_urls_are_refused_without_echoing_the_password(url: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load({"ISSUER_REDIS_URL": url, "ISSUER_REDIS_PREFIX": "{issuer}:"})
    assert reason in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_cluster_needs_a_hash_tag_in_the_prefix() -> None:
    with pytest.raises(SettingsError, match=r"hash tag.*\{issuer\}:"):
        load({"ISSUER_REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    settings = load(
        {"ISSUER_REDIS_URL": "redis+cluster://127.0.0.1:7000", "ISSUER_REDIS_PREFIX": "{issuer}:"}
    )
    assert settings.redis_prefix == "{issuer}:"
    # single servers and sentinels keep any prefix
    assert load({"ISSUER_REDIS_URL": "redis+sentinel://127.0.0.1/main"}).redis_prefix == "issuer:"


# ---------------------------------------------------------------- the revocation path, end to end


@pytest.fixture
def make_deployment(pg_url: str, tmp_path: Path, key_env: dict[str, str]) -> Iterator[Any]:
    deployments: list[Deployment] = []

    def make(redis_url: str, prefix: str) -> Deployment:
        env = support.issuer_env(
            pg_url,
            tmp_path / "keys",
            ISSUER_REDIS_URL=redis_url,
            ISSUER_REDIS_PREFIX=prefix,
            ISSUER_URL="https://issuer.test",
            ISSUER_RATE_LIMIT_PASSWORD="0",  # one user logs in many times from one address
            **key_env,
        )
        deployment = Deployment(env, tmp_path)
        deployments.append(deployment)
        return deployment

    yield make
    for deployment in deployments:
        deployment.stack.close()


def _claims(token: str) -> tuple[dict[str, Any], str]:
    return jwt.decode(token, options={"verify_signature": False}), jwt.get_unverified_header(token)["kid"]


def _introspect_active(url: str, client: Any, token: str) -> bool | None:
    """``active`` from /introspect, or None while the instance answers 503 (Redis failing over)."""
    response = support.post(url + "/introspect", auth=client.auth, data={"token": token})
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    return bool(response.json()["active"])


async def _revocation_path(deployment: Deployment, redis_url: str, prefix: str) -> tuple[Any, ...]:
    """Two instances on this Redis: revoke on one, rejected on the other, the verifier's copy follows."""
    app = deployment.client("app", "password", "refresh_token")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    deployment.user("alice")
    one, two = deployment.serve("one"), deployment.serve("two")
    for server in (one, two):
        ready = support.get(server.url + "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"] == "ok"

    verifier_copy = RedisDenylist(redis_url, prefix=prefix, heartbeat=0.2, reconnect_delay=0.1)
    verifier_copy.start()
    try:
        assert verifier_copy.wait_ready(15)
        tokens = login(one.url, app)
        claims, kid = _claims(tokens["access_token"])
        assert active(two.url, rs, tokens["access_token"])
        assert revoke(one.url, app, tokens["refresh_token"]).status_code == 200
        assert not active(two.url, rs, tokens["access_token"])  # the family's sid, through Redis
        assert refresh(two.url, app, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        assert until(lambda: verifier_copy.check(kid, claims) == "revoked")
    except BaseException:
        verifier_copy.close()
        raise
    return app, rs, one, two, verifier_copy, tokens


async def test_sentinel_revocation_survives_a_failover(make_deployment: Any, tmp_path: Path) -> None:
    with sentinel_setup(tmp_path) as setup:
        prefix = "issuer-sentinel:"
        deployment = make_deployment(setup.url, prefix)
        app, rs, one, two, verifier_copy, revoked = await _revocation_path(deployment, setup.url, prefix)
        try:
            live = login(two.url, app)
            first_master = setup.master()
            new_master = setup.failover()
            assert new_master != first_master
            # the old revocation is still in force through the new master, on both instances
            for server in (one, two):
                assert until(lambda s=server: _introspect_active(s.url, rs, revoked["access_token"]) is False)
            # a new revocation after the failover reaches the other instance and the verifier's copy
            claims, kid = _claims(live["access_token"])
            assert until(lambda: revoke(two.url, app, live["refresh_token"]).status_code == 200)
            # Until Sentinel has demoted the old master (seconds after the promotion), the two
            # instances may be talking to different masters: a revocation written through one
            # reaches the other's through the database, by the one-second reconciliation (README,
            # Deployment). Bounded, not instant: within a few seconds, never "still active" after.
            assert until(lambda: _introspect_active(one.url, rs, live["access_token"]) is False, hang_guard=5)
            assert until(lambda: verifier_copy.check(kid, claims) == "revoked")
            assert support.get(one.url + "/readyz").status_code == 200
        finally:
            verifier_copy.close()
        assert SERVICE in setup.url


async def test_cluster_revocation_and_rebuild_after_flushall(make_deployment: Any, tmp_path: Path) -> None:
    with cluster_setup(tmp_path) as setup:
        prefix = "{issuer-test}:"
        deployment = make_deployment(setup.url, prefix)
        app, rs, one, two, verifier_copy, revoked = await _revocation_path(deployment, setup.url, prefix)
        try:
            # Redis Cluster loses everything: the revocation is rebuilt from the database at once
            setup.flushall()
            assert _introspect_active(two.url, rs, revoked["access_token"]) is False
            # and the channel still carries news to the verifier's copy
            live = login(two.url, app)
            claims, kid = _claims(live["access_token"])
            assert revoke(two.url, app, live["access_token"]).status_code == 200
            assert _introspect_active(one.url, rs, live["access_token"]) is False
            assert until(lambda: verifier_copy.check(kid, claims) == "revoked")
        finally:
            verifier_copy.close()


async def test_key_announcements_reach_instances_through_a_cluster(
    make_deployment: Any, tmp_path: Path
) -> None:
    """The key-change channel (``<prefix>keys``) works through the cluster's pub/sub too."""
    with cluster_setup(tmp_path) as setup:
        deployment = make_deployment(setup.url, "{issuer-keys}:")
        deployment.env["ISSUER_KEY_RELOAD_INTERVAL"] = "3600"  # only the Redis message can tell them
        one = deployment.serve("one")
        before = support.get(one.url + "/.well-known/jwks.json").json()["keys"]
        deployment.cli("keys", "rotate", "--force")
        # the reload interval is an hour: only the announcement can make this happen
        assert until(
            lambda: len(support.get(one.url + "/.well-known/jwks.json").json()["keys"]) > len(before)
        )
