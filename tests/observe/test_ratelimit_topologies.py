"""The Redis rate limiter on Redis Cluster and Redis Sentinel (started by tests.deploy.topologies
from the machine's ``redis-server``): a password request's keys (client, username and address,
address, the global budget) share the prefix's slot, so the one script runs on a Cluster; a
Sentinel failover-capable client counts the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from issuer.errors import Overloaded, RateLimited
from issuer.ratelimit import RateLimits
from tests.deploy.topologies import cluster_setup, sentinel_setup


async def _exercise(limits: RateLimits) -> None:
    for _ in range(2):
        await limits.check("cli_a", "password", "alice", "10.0.0.1")
    with pytest.raises(RateLimited):
        await limits.check("cli_a", "password", "alice", "10.0.0.1")
    await limits.check("cli_a", "password", "alice", "10.0.0.2")  # another address
    await limits.check("cli_b", "password", "alice", "10.0.0.1")  # another client
    with pytest.raises(RateLimited):  # the client's own budget: 3 of 3 used
        await limits.check("cli_a", "client_credentials", None, "10.0.0.1")
    assert limits.refused == {"client": 1, "password": 1, "address": 0, "global": 0}


async def _exercise_stuffing(url: str, prefix: str) -> None:
    """Credential stuffing: all four keys of one attempt in one script, on this topology."""
    limits = RateLimits(
        client_limit=100,
        password_limit=5,
        address_limit=2,
        global_limit=3,
        window=60,
        redis_url=url,
        prefix=prefix,
    )
    try:
        await limits.check("cli_s", "password", "u1", "10.0.0.9")
        await limits.password_attempt("cli_t", "u2", "10.0.0.9")
        with pytest.raises(RateLimited):  # the address, across usernames and clients
            await limits.check("cli_u", "password", "u3", "10.0.0.9")
        with pytest.raises(Overloaded):  # the global budget per second, whatever the address
            for i in range(50):  # three or four attempts at most, unless a second passes between them
                await limits.password_attempt("cli_s", f"v{i}", f"10.1.0.{i}")
        assert limits.refused["address"] == 1 and limits.refused["global"] == 1
    finally:
        await limits.close()


@pytest.mark.parametrize("prefix", ["{issuer}:", "{tenant-7}:rl-test:"])
async def test_rate_limits_on_redis_cluster(tmp_path: Path, prefix: str) -> None:
    with cluster_setup(tmp_path) as cluster:
        limits = RateLimits(client_limit=3, password_limit=2, window=60, redis_url=cluster.url, prefix=prefix)
        try:
            await _exercise(limits)
        finally:
            await limits.close()
        await _exercise_stuffing(cluster.url, prefix)


async def test_rate_limits_on_redis_sentinel(tmp_path: Path) -> None:
    with sentinel_setup(tmp_path) as sentinel:
        limits = RateLimits(
            client_limit=3, password_limit=2, window=60, redis_url=sentinel.url, prefix="issuer:"
        )
        try:
            await _exercise(limits)
        finally:
            await limits.close()
        await _exercise_stuffing(sentinel.url, "issuer:")
