"""Rate limits on /token: the N+1st attempt in the window is refused (429, Retry-After,
``rate_limited``), another client or address is not, counters vanish after the window, and the
password limit is checked before the password hash. Against real Redis (the test's own prefix)
and the in-process limiter; over real HTTP where the address matters."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import redis

from issuer.app import create_app
from issuer.errors import RateLimited, TemporarilyUnavailable
from issuer.keyfiles import KeyMaterial
from issuer.ratelimit import LocalWindow, RateLimits
from issuer.runtime import Runtime
from tests import support
from tests.conftest import make_settings

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the limiters themselves


def local_limits(clock: Clock, **kwargs: int) -> RateLimits:
    return RateLimits(
        client_limit=kwargs.get("client", 0),
        password_limit=kwargs.get("password", 0),
        window=kwargs.get("window", 60),
        clock=clock,
    )


def redis_limits(prefix: str, **kwargs: int) -> RateLimits:
    return RateLimits(
        client_limit=kwargs.get("client", 0),
        password_limit=kwargs.get("password", 0),
        window=kwargs.get("window", 60),
        redis_url=support.REDIS_URL,
        prefix=prefix,
    )


@pytest.fixture(params=["in-process", "redis"])
def make_limits(request: pytest.FixtureRequest, redis_prefix: str):
    """Builds limits of the parametrised kind (the tests close them)."""
    clock = Clock()

    def make(**kwargs: int) -> RateLimits:
        if request.param == "in-process":
            return local_limits(clock, **kwargs)
        return redis_limits(redis_prefix, **kwargs)

    return make


async def test_the_n_plus_first_attempt_is_refused_and_others_are_unaffected(make_limits) -> None:
    limits = make_limits(client=5, password=2)
    try:
        for _ in range(5):
            await limits.check("cli_a", "client_credentials", None, "10.0.0.1")
        with pytest.raises(RateLimited) as refused:
            await limits.check("cli_a", "client_credentials", None, "10.0.0.1")
        assert refused.value.status == 429 and refused.value.code == "rate_limited"
        assert 1 <= refused.value.retry_after <= 60
        assert limits.refused == {"client": 1, "password": 0}
        await limits.check("cli_b", "client_credentials", None, "10.0.0.1")  # another client

        # password: per username and address, on top of the client's own budget
        await limits.check("cli_c", "password", "alice", "10.0.0.1")
        await limits.check("cli_c", "password", "alice", "10.0.0.1")
        with pytest.raises(RateLimited):
            await limits.check("cli_c", "password", "alice", "10.0.0.1")
        with pytest.raises(RateLimited):  # the same user spelled otherwise is the same user
            await limits.check("cli_c", "password", " ALICE", "10.0.0.1")
        await limits.check("cli_c", "password", "alice", "10.0.0.2")  # another address
        await limits.check("cli_c", "password", "bob", "10.0.0.1")  # another user
        assert limits.refused == {"client": 1, "password": 2}
    finally:
        await limits.close()


async def test_a_refused_attempt_counts_nowhere(make_limits) -> None:
    """All keys or none: a request refused by the password limit does not use the client's budget."""
    limits = make_limits(client=3, password=1)
    try:
        await limits.check("cli_a", "password", "alice", "10.0.0.1")
        for _ in range(5):
            with pytest.raises(RateLimited):
                await limits.check("cli_a", "password", "alice", "10.0.0.1")
        await limits.check("cli_a", "client_credentials", None, "10.0.0.1")
        await limits.check(
            "cli_a", "client_credentials", None, "10.0.0.1"
        )  # 3 of 3: the refusals did not count
        with pytest.raises(RateLimited):
            await limits.check("cli_a", "client_credentials", None, "10.0.0.1")
    finally:
        await limits.close()


async def test_zero_disables_each_limit() -> None:
    clock = Clock()
    for limits in (
        local_limits(clock, client=0, password=0),
        local_limits(clock, client=5, password=5, window=0),
    ):
        assert not limits.enabled
        for _ in range(50):
            await limits.check("cli_a", "password", "alice", "10.0.0.1")
    only_password = local_limits(clock, client=0, password=1)
    for _ in range(20):  # no per-client limit: client credentials are never counted
        await only_password.check("cli_a", "client_credentials", None, "10.0.0.1")
    assert only_password.keys("cli_a", "client_credentials", None, "10.0.0.1") == []


async def test_in_process_window_slides_and_idle_keys_vanish() -> None:
    clock = Clock()
    window = LocalWindow(10, clock)
    assert await window.hit([("k", 2)]) == (0, 0.0)
    clock.now += 4
    assert await window.hit([("k", 2)]) == (0, 0.0)
    clock.now += 1
    index, wait = await window.hit([("k", 2)])
    assert index == 1 and wait == pytest.approx(5.0)  # the first attempt leaves the window in 5 s
    clock.now += 5.01
    assert await window.hit([("k", 2)]) == (0, 0.0)  # it slid: one left, one new
    assert await window.hit([("other", 1)]) == (0, 0.0)
    clock.now += 10.01
    await window.hit([("fresh", 1)])  # a check after a whole window sweeps idle keys
    assert set(window.logs) == {"fresh"}


async def test_redis_counters_have_a_ttl_and_vanish_after_the_window(redis_prefix: str) -> None:
    limits = redis_limits(redis_prefix, client=2, password=2, window=1)
    admin = redis.Redis.from_url(support.REDIS_URL, decode_responses=True)
    try:
        await limits.check("cli_a", "password", "alice", "10.0.0.1")
        keys = sorted(admin.scan_iter(match=redis_prefix + "rl:*"))
        assert len(keys) == 2 and all("{cli_a}" in key for key in keys)
        assert not any("alice" in key for key in keys)  # usernames are not stored in Redis
        for key in keys:
            assert admin.type(key) == "zset"
            assert 0 < admin.pttl(key) <= 1000
        await limits.check("cli_a", "password", "alice", "10.0.0.1")
        with pytest.raises(RateLimited) as refused:
            await limits.check("cli_a", "password", "alice", "10.0.0.1")
        assert refused.value.retry_after == 1
        deadline = time.monotonic() + 5
        while admin.exists(*keys) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert admin.exists(*keys) == 0  # expired by Redis itself
        await limits.check("cli_a", "password", "alice", "10.0.0.1")  # a new window
    finally:
        admin.close()
        await limits.close()


async def test_unreachable_redis_is_503_never_a_skipped_limit() -> None:
    limits = RateLimits(
        client_limit=5, password_limit=5, window=60, redis_url=f"redis://127.0.0.1:{support.free_port()}/0"
    )
    try:
        with pytest.raises(TemporarilyUnavailable):
            await limits.check("cli_a", "password", "alice", "10.0.0.1")
        assert limits.redis_errors == 1
    finally:
        await limits.close()


# ---------------------------------------------------------------- over HTTP


def _client(env: dict[str, str], *grants: str) -> tuple[str, str]:
    args = ["clients", "create", "--json", "--name", "app", "--scope", "read"]
    for grant in grants:
        args += ["--grant", grant]
    result = support.run_cli(env, *args)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return created["client_id"], created["client_secret"]


@pytest.mark.parametrize("with_redis", [False, True], ids=["in-process", "redis"])
def test_http_429_with_retry_after_per_client_and_per_address(
    with_redis: bool, sqlite_url: str, tmp_path: Path, key_env: dict[str, str], redis_prefix: str
) -> None:
    extra = {"ISSUER_REDIS_URL": support.REDIS_URL, "ISSUER_REDIS_PREFIX": redis_prefix} if with_redis else {}
    env = support.issuer_env(
        sqlite_url,
        tmp_path / "keys",
        ISSUER_RATE_LIMIT_CLIENT="4",
        ISSUER_RATE_LIMIT_PASSWORD="2",
        ISSUER_RATE_LIMIT_WINDOW="30",
        **extra,
        **key_env,
    )
    first = _client(env, "password", "client_credentials")
    second = _client(env, "client_credentials")
    assert (
        support.run_cli(env, "users", "create", "--username", "alice", input=PASSWORD + "\n").returncode == 0
    )
    other_address = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with support.running_server(env, tmp_path / "server.log") as server, other_address:
        url = server.url + "/token"
        wrong = {"grant_type": "password", "username": "alice", "password": "not the password"}
        assert httpx.post(url, auth=first, data=wrong).status_code == 400
        assert httpx.post(url, auth=first, data=wrong).status_code == 400
        refused = httpx.post(url, auth=first, data={**wrong, "password": PASSWORD})
        assert refused.status_code == 429  # even the right password: the limit comes first
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert refused.headers["cache-control"] == "no-store"
        # the same user from another address is not limited by the first address's attempts
        right = {"grant_type": "password", "username": "alice", "password": PASSWORD}
        assert other_address.post(url, auth=first, data=right).status_code == 200

        # per client, all grants together: 3 attempts so far counted (2 wrong + 1 good) -> 1 left
        assert httpx.post(url, auth=first, data={"grant_type": "client_credentials"}).status_code == 200
        over = httpx.post(url, auth=first, data={"grant_type": "client_credentials"})
        assert over.status_code == 429 and over.json()["error"] == "rate_limited"
        assert int(over.headers["retry-after"]) >= 1
        for _ in range(4):  # another client is unaffected
            assert httpx.post(url, auth=second, data={"grant_type": "client_credentials"}).status_code == 200
        assert httpx.post(url, auth=second, data={"grant_type": "client_credentials"}).status_code == 429
    if with_redis:
        admin = redis.Redis.from_url(support.REDIS_URL)
        try:
            keys = list(admin.scan_iter(match=redis_prefix + "rl:*"))
            assert keys and all(0 < admin.pttl(key) <= 30_000 for key in keys)
        finally:
            admin.close()


async def test_password_limit_is_checked_before_the_password_hash(
    sqlite_url: str, tmp_path: Path, material: KeyMaterial
) -> None:
    from litestar.testing import AsyncTestClient

    settings = make_settings(sqlite_url, tmp_path, rate_limit_password=3, rate_limit_window=60)
    runtime = Runtime(settings, material=material)  # started and closed by the app's lifespan
    try:
        created = await runtime.clients.create(
            name="app", grant_types=["password"], scopes=["read"], audience=None, access_token_ttl=None
        )
        await runtime.users.create("alice", PASSWORD)
        hashes = 0
        verify = runtime.passwords.verify

        async def counting_verify(stored: str | None, password: str) -> bool:
            nonlocal hashes
            hashes += 1
            return await verify(stored, password)

        runtime.passwords.verify = counting_verify  # type: ignore[method-assign]
        async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
            auth = (created.client_id, created.client_secret)
            form = {"grant_type": "password", "username": "alice", "password": "wrong password"}
            statuses = [(await client.post("/token", auth=auth, data=form)).status_code for _ in range(8)]
        assert statuses == [400, 400, 400, 429, 429, 429, 429, 429]
        assert hashes == 3  # the five refused attempts cost no argon2 hash
        assert runtime.rate_limits.refused["password"] == 5
    finally:
        await runtime.db.close()
