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
from argon2 import PasswordHasher

from issuer.app import create_app
from issuer.errors import Overloaded, RateLimited, TemporarilyUnavailable
from issuer.keys.material import KeyMaterial
from issuer.ratelimit import LocalWindow, RateLimits
from issuer.runtime import Runtime
from tests import support
from tests.conftest import make_settings
from tests.observe.test_metrics import METRICS_TOKEN, scrape, value

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
        address_limit=kwargs.get("address", 0),
        global_limit=kwargs.get("global_", 0),
        window=kwargs.get("window", 60),
        clock=clock,
    )


def redis_limits(prefix: str, **kwargs: int) -> RateLimits:
    return RateLimits(
        client_limit=kwargs.get("client", 0),
        password_limit=kwargs.get("password", 0),
        address_limit=kwargs.get("address", 0),
        global_limit=kwargs.get("global_", 0),
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
        assert limits.refused == {"client": 1, "password": 0, "address": 0, "global": 0}
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
        assert limits.refused == {"client": 1, "password": 2, "address": 0, "global": 0}
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
    result = support.run_cli_here(env, *args)
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
        support.run_cli_here(env, "users", "create", "--username", "alice", input=PASSWORD + "\n").returncode
        == 0
    )
    other_address = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with support.running_server(env, tmp_path / "server.log") as server, other_address:
        url = server.url + "/token"
        wrong = {"grant_type": "password", "username": "alice", "password": "not the password"}
        assert support.post(url, auth=first, data=wrong).status_code == 400
        assert support.post(url, auth=first, data=wrong).status_code == 400
        refused = support.post(url, auth=first, data={**wrong, "password": PASSWORD})
        assert refused.status_code == 429  # even the right password: the limit comes first
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert refused.headers["cache-control"] == "no-store"
        # the same user from another address is not limited by the first address's attempts
        right = {"grant_type": "password", "username": "alice", "password": PASSWORD}
        assert other_address.post(url, auth=first, data=right).status_code == 200

        # per client, all grants together: 3 attempts so far counted (2 wrong + 1 good) -> 1 left
        assert support.post(url, auth=first, data={"grant_type": "client_credentials"}).status_code == 200
        over = support.post(url, auth=first, data={"grant_type": "client_credentials"})
        assert over.status_code == 429 and over.json()["error"] == "rate_limited"
        assert int(over.headers["retry-after"]) >= 1
        for _ in range(4):  # another client is unaffected
            assert (
                support.post(url, auth=second, data={"grant_type": "client_credentials"}).status_code == 200
            )
        assert support.post(url, auth=second, data={"grant_type": "client_credentials"}).status_code == 429
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


# ---------------------------------------------------------------- credential stuffing (issue 14, point 2)


def counting_hasher(configured: PasswordHasher, calls: list[str]) -> PasswordHasher:
    """The configured hasher, counting its argon2 verifications (as tests/test_users.py does)."""

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append("verify")
            return super().verify(hash, password)

    return Counting(configured.time_cost, configured.memory_cost, configured.parallelism)


async def test_credential_stuffing_limits_one_address_across_usernames_and_clients(make_limits) -> None:
    limits = make_limits(password=5, address=3)
    try:
        for i in range(3):  # a new username each time: the per-username limit never fills
            await limits.check("cli_a" if i % 2 else "cli_b", "password", f"user{i}", "10.0.0.1")
        with pytest.raises(RateLimited) as refused:
            await limits.check("cli_c", "password", "user-new", "10.0.0.1")  # any client, any name
        assert refused.value.status == 429 and refused.value.detail == "rate limit: address"
        with pytest.raises(RateLimited):  # the login page's gate counts the same keys
            await limits.password_attempt("cli_a", "another", "10.0.0.1")
        await limits.check("cli_a", "password", "user0", "10.0.0.2")  # another address
        await limits.check("cli_a", "client_credentials", None, "10.0.0.1")  # not a password attempt
        # IPv6 counts by /64: one host rotating through its network is one address
        for i in range(3):
            await limits.password_attempt("cli_a", f"v6user{i}", f"2001:db8:1:2::{i + 1:x}")
        with pytest.raises(RateLimited):
            await limits.password_attempt("cli_a", "v6user9", "2001:db8:1:2:ffff::9")
        await limits.password_attempt("cli_a", "v6user9", "2001:db8:1:3::1")  # the next /64
        assert limits.refused == {"client": 0, "password": 0, "address": 3, "global": 0}
    finally:
        await limits.close()


async def test_credential_stuffing_global_ceiling_is_503_and_refusals_spend_none_of_it(make_limits) -> None:
    limits = make_limits(password=5, address=2, global_=4)
    try:
        await limits.check("cli_a", "password", "u1", "10.0.0.1")
        await limits.check("cli_a", "password", "u2", "10.0.0.1")
        for _ in range(5):  # refused per address: none of these spends the global budget
            with pytest.raises(RateLimited):
                await limits.check("cli_a", "password", "u3", "10.0.0.1")
        await limits.check("cli_a", "password", "u4", "10.0.0.2")
        await limits.check("cli_a", "password", "u5", "10.0.0.3")  # 4 of the global 4 this second
        with pytest.raises(Overloaded) as shed:
            await limits.check("cli_a", "password", "u6", "10.0.0.4")
        assert shed.value.status == 503 and shed.value.code == "temporarily_unavailable"
        assert shed.value.retry_after == 1 and shed.value.detail == "rate limit: global"
        assert limits.refused == {"client": 0, "password": 0, "address": 5, "global": 1}
    finally:
        await limits.close()


async def test_credential_stuffing_the_global_window_is_one_second() -> None:
    clock = Clock()
    limits = RateLimits(client_limit=0, password_limit=0, window=60, global_limit=2, clock=clock)
    await limits.password_attempt("cli_a", "u1", "10.0.0.1")
    await limits.password_attempt("cli_a", "u2", "10.0.0.2")
    with pytest.raises(Overloaded):
        await limits.password_attempt("cli_a", "u3", "10.0.0.3")
    clock.now += 1.01
    await limits.password_attempt("cli_a", "u3", "10.0.0.3")  # a second later: room again
    clock.now += 60.0
    await limits.password_attempt("cli_a", "u4", "10.0.0.4")  # the sweep keeps only live keys
    assert len(limits.backend.logs) == 1


async def test_credential_stuffing_refused_attempts_run_no_argon2(
    sqlite_url: str, tmp_path: Path, material: KeyMaterial
) -> None:
    """Over the app: a new username per attempt from one address; the argon2 work is counted as
    in tests/test_users.py (the hasher's own verify calls)."""
    from litestar.testing import AsyncTestClient

    settings = make_settings(
        sqlite_url, tmp_path, rate_limit_password=3, rate_limit_password_address=4, rate_limit_window=60
    )
    runtime = Runtime(settings, material=material)  # started and closed by the app's lifespan
    try:
        created = await runtime.clients.create(
            name="app", grant_types=["password"], scopes=["read"], audience=None, access_token_ttl=None
        )
        calls: list[str] = []
        runtime.passwords.hasher = counting_hasher(runtime.passwords.hasher, calls)
        async with AsyncTestClient(app=create_app(runtime=runtime)) as client:
            auth = (created.client_id, created.client_secret)
            statuses = []
            for i in range(10):
                form = {"grant_type": "password", "username": f"victim{i}", "password": "guess 123456"}
                statuses.append((await client.post("/token", auth=auth, data=form)).status_code)
        assert statuses == [400] * 4 + [429] * 6
        assert len(calls) == 4  # the six refused attempts cost no argon2 verification
        assert runtime.passwords.verifications == 4
        assert runtime.rate_limits.refused["address"] == 6
    finally:
        await runtime.db.close()


async def test_credential_stuffing_a_full_hash_queue_sheds_before_argon2() -> None:
    from issuer.users import Passwords

    passwords = Passwords(memory_kib=8192, time_cost=1, parallelism=1, concurrency=1, queue=1)
    calls: list[str] = []
    passwords.hasher = counting_hasher(passwords.hasher, calls)
    await passwords._slots.acquire()  # the one slot is busy (a long hash)
    waiting = asyncio.ensure_future(passwords.verify(None, "guess 1"))
    deadline = time.monotonic() + 10
    while passwords.waiting < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert passwords.waiting == 1  # one check waits: the queue is full
    with pytest.raises(Overloaded) as shed:
        await passwords.verify(None, "guess 2")
    assert shed.value.status == 503 and shed.value.retry_after == 1
    assert calls == [] and passwords.shed == 1
    passwords._slots.release()
    assert await waiting is False  # the waiting check still runs once a slot frees
    assert calls == ["verify"] and passwords.verifications == 1 and passwords.waiting == 0


def _stuffing_env(database_url: str, tmp_path: Path, key_env: dict[str, str], **extra: str) -> dict[str, str]:
    return support.issuer_env(
        database_url,
        tmp_path / "keys",
        ISSUER_METRICS_TOKEN=METRICS_TOKEN,
        ISSUER_RATE_LIMIT_WINDOW="60",
        **extra,
        **key_env,
    )


def test_credential_stuffing_new_usernames_from_one_address_get_429_before_argon2(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str], redis_prefix: str
) -> None:
    """A real server on real Redis: one address trying a new username each time is refused after
    ISSUER_RATE_LIMIT_PASSWORD_ADDRESS attempts, the refused attempts run no argon2 (the server's
    own count), and a real user from another address still gets in at once."""
    env = _stuffing_env(
        sqlite_url,
        tmp_path,
        key_env,
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_RATE_LIMIT_PASSWORD="10",
        ISSUER_RATE_LIMIT_PASSWORD_ADDRESS="5",
    )
    auth = _client(env, "password")
    support.add_user(env, "alice")
    user_address = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with support.running_server(env, tmp_path / "server.log") as server, user_address:
        url = server.url + "/token"
        statuses = []
        for i in range(12):
            form = {"grant_type": "password", "username": f"victim{i}@example.com", "password": "123456 x"}
            statuses.append(support.post(url, auth=auth, data=form).status_code)
        assert statuses == [400] * 5 + [429] * 7
        form = {"grant_type": "password", "username": "x", "password": "y"}
        refused = support.post(url, auth=auth, data=form)
        assert refused.json()["error"] == "rate_limited" and 1 <= int(refused.headers["retry-after"]) <= 60
        right = {"grant_type": "password", "username": "alice", "password": support.PASSWORD}
        assert user_address.post(url, auth=auth, data=right).status_code == 200
        samples = scrape(server)
    assert value(samples, "issuer_password_verifications_total") == 6  # 5 guesses + alice, no more
    assert value(samples, "issuer_rate_limited_total", limit="address") == 8


def test_credential_stuffing_global_ceiling_sheds_across_two_instances_before_argon2(
    pg_url: str, tmp_path: Path, key_env: dict[str, str], redis_prefix: str
) -> None:
    """Two instances on one Redis share the global budget: once attempts through the first have
    spent this second's budget, the second sheds with 503 without running argon2. Rounds repeat
    (a second apart) until one runs inside one second, so a loaded machine only makes it slower."""
    env = _stuffing_env(
        pg_url,
        tmp_path,
        key_env,
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_RATE_LIMIT_PASSWORD_GLOBAL="3",
    )
    auth = _client(env, "password")
    first = support.ServerProcess(env).start(tmp_path / "first.log")
    try:
        second = support.ServerProcess(env).start(tmp_path / "second.log")
        try:
            shared = False
            statuses: list[int] = []
            deadline = time.monotonic() + 60
            round_ = 0
            while not shared and time.monotonic() < deadline:
                round_ += 1
                time.sleep(1.1)  # a fresh one-second window
                before = value(scrape(second), "issuer_password_verifications_total")
                for i in range(10):  # through the first instance until it sheds
                    form = {"grant_type": "password", "username": f"r{round_}u{i}", "password": "guess 1234"}
                    status = support.post(first.url + "/token", auth=auth, data=form).status_code
                    statuses.append(status)
                    if status == 503:
                        break
                else:
                    continue  # slower than the budget's second: try again
                form = {"grant_type": "password", "username": f"r{round_}-other", "password": "guess 1234"}
                answer = support.post(second.url + "/token", auth=auth, data=form)
                if answer.status_code == 503:
                    assert answer.json()["error"] == "temporarily_unavailable"
                    assert answer.headers["retry-after"] == "1"
                    assert value(scrape(second), "issuer_password_verifications_total") == before
                    shared = True
            assert shared, f"the second instance never shed after the first spent the budget: {statuses}"
            total = sum(
                value(scrape(server), "issuer_password_verifications_total") for server in (first, second)
            )
            allowed = sum(1 for status in statuses if status != 503)
            assert total >= allowed and 503 in statuses
        finally:
            second.stop()
    finally:
        first.stop()


# ---------------------------------------------------------------- forwarded addresses (issue 14, point 3)


def _guess(client: httpx.Client, url: str, auth: tuple[str, str], forwarded_for: str) -> int:
    form = {"grant_type": "password", "username": "alice", "password": "not the password"}
    return client.post(url, auth=auth, data=form, headers={"X-Forwarded-For": forwarded_for}).status_code


def test_forwarded_addresses_are_ignored_by_default(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    """No ISSUER_TRUSTED_PROXIES: an X-Forwarded-For from loopback is not believed, so rotating it
    does not get past the per-username-and-address limit (it keys on the real peer), and naming
    a victim's address in it does not lock the victim out."""
    env = support.issuer_env(
        sqlite_url,
        tmp_path / "keys",
        ISSUER_RATE_LIMIT_PASSWORD="2",
        ISSUER_RATE_LIMIT_WINDOW="60",
        **key_env,
    )
    auth = _client(env, "password")
    support.add_user(env, "alice")
    with support.running_server(env, tmp_path / "server.log") as server, httpx.Client() as attacker:
        url = server.url + "/token"
        statuses = [_guess(attacker, url, auth, f"198.51.100.{i}") for i in range(1, 6)]
        assert statuses == [400, 400, 429, 429, 429]
        victim = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with victim:  # the attacker named 127.0.0.2 too: it is not the attacker's to spend
            assert _guess(attacker, url, auth, "127.0.0.2") == 429
            right = {"grant_type": "password", "username": "alice", "password": support.PASSWORD}
            assert victim.post(url, auth=auth, data=right).status_code == 200


def test_forwarded_addresses_are_honoured_from_trusted_proxies_only(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    """ISSUER_TRUSTED_PROXIES=127.0.0.2/31 (a CIDR network): X-Forwarded-For from 127.0.0.2 is
    the client address (each forwarded address has its own budget), from 127.0.0.1 it is not."""
    env = support.issuer_env(
        sqlite_url,
        tmp_path / "keys",
        ISSUER_RATE_LIMIT_PASSWORD="2",
        ISSUER_RATE_LIMIT_WINDOW="60",
        ISSUER_TRUSTED_PROXIES="127.0.0.2/31",
        **key_env,
    )
    auth = _client(env, "password")
    support.add_user(env, "alice")
    proxy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with support.running_server(env, tmp_path / "server.log") as server, proxy, httpx.Client() as direct:
        url = server.url + "/token"
        assert [_guess(proxy, url, auth, f"203.0.113.{i}") for i in range(1, 6)] == [400] * 5
        assert [_guess(proxy, url, auth, "203.0.113.77") for _ in range(3)] == [400, 400, 429]
        # the hop the proxy saw counts, not what the client wrote before it
        assert [_guess(proxy, url, auth, f"10.9.8.{i}, 203.0.113.78") for i in range(2)] == [400, 400]
        assert _guess(proxy, url, auth, "203.0.113.78") == 429
        assert [_guess(direct, url, auth, f"198.51.100.{i}") for i in range(1, 4)] == [400, 400, 429]
