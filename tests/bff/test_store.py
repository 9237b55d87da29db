"""The BFF's session store on SQLite and PostgreSQL, alone and with Redis in front.

DESIGN.md, "The backend-for-frontend": the store keeps the SHA-256 of the cookie value, never the
value, and the tokens only sealed (AES-GCM, bound to the session); a refresh is a compare-and-set
on the session's version; a restart, or Redis losing its data, loses no session. Several
instances (two store objects, or two runtimes, on one database) never answer from their
in-process copy a session that another one changed or ended: with Redis the copy follows the
invalidation channel and is bypassed while the subscription is down; PostgreSQL without Redis is
read directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from msgspec import structs
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import select

from issuer.bff.invalidation import Invalidations
from issuer.bff.runtime import SESSION_COOKIE, SHARED_CACHE_TTL, BffRuntime
from issuer.bff.sessions import Sealer, Session, Tokens, digest, new_session_id
from issuer.bff.settings import load
from issuer.bff.store import CachedSessions, DatabaseSessions, MemoryCached, SessionStore, sessions_table
from issuer.keys.material import b64encode
from issuer.store.database import Database
from tests import support

IDLE = 3600


def _session(cookie: str, *, now: int | None = None) -> Session:
    now = int(time.time()) if now is None else now
    return Session(
        digest=digest(cookie),
        subject="usr_alice",
        claims={"sub": "usr_alice", "name": "Alice"},
        tokens=Tokens(
            access_token="eyJ.access." + secrets.token_urlsafe(16),
            expires_at=now + 300,
            refresh_token="irt_" + secrets.token_urlsafe(32),
            id_token="eyJ.id." + secrets.token_urlsafe(16),
        ),
        created_at=now,
        last_seen_at=now,
        expires_at=now + 86400,
        sid="sid_" + secrets.token_urlsafe(8),
    )


def _durable(url: str, key: bytes) -> DatabaseSessions:
    return DatabaseSessions(Database(url), Sealer(key))


def _shared(url: str, key: bytes, prefix: str, subscribe_url: str = support.REDIS_URL) -> MemoryCached:
    """One instance's store with Redis, as :class:`issuer.bff.runtime.BffRuntime` builds it (the
    subscription may go through another URL, e.g. a :class:`tests.support.TcpProxy`)."""
    client = aioredis.Redis.from_url(support.REDIS_URL)
    invalidations = Invalidations(client, subscribe_url, prefix, heartbeat=0.2)
    cached = CachedSessions(_durable(url, key), client, prefix, IDLE)
    return MemoryCached(cached, ttl=SHARED_CACHE_TTL, invalidations=invalidations)


@contextlib.asynccontextmanager
async def _started(*stores: Any) -> AsyncIterator[None]:
    """Start each store (or runtime); close them all afterwards, also when a start failed."""
    async with contextlib.AsyncExitStack() as stack:
        for store in stores:
            await store.start()
            stack.push_async_callback(store.close)
        yield


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (an event of the test's own making), with a hang guard."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@pytest.fixture(params=["database", "memory", "redis", "shared"])
async def store(
    request: pytest.FixtureRequest, bff_database_url: str, session_key: bytes
) -> AsyncIterator[SessionStore]:
    durable = _durable(bff_database_url, session_key)
    live: SessionStore = durable
    if request.param == "memory":
        live = MemoryCached(durable)
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        live = CachedSessions(durable, aioredis.Redis.from_url(support.REDIS_URL), prefix, IDLE)
    if request.param == "shared":
        live = _shared(bff_database_url, session_key, request.getfixturevalue("redis_prefix"))
    await live.start()
    try:
        yield live
    finally:
        await live.close()


def test_a_session_id_is_256_random_bits() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 43 for i in ids)  # 32 bytes, base64url without padding


async def test_create_get_delete(store: SessionStore) -> None:
    cookie = new_session_id()
    session = _session(cookie)
    await store.create(session)
    assert await store.get(digest(cookie)) == session
    assert await store.get(digest(new_session_id())) is None
    await store.delete(digest(cookie))
    assert await store.get(digest(cookie)) is None


async def test_the_row_holds_a_digest_and_sealed_tokens_only(
    bff_database_url: str, session_key: bytes
) -> None:
    durable = _durable(bff_database_url, session_key)
    await durable.start()
    try:
        cookie = new_session_id()
        session = _session(cookie)
        await durable.create(session)
        async with durable.db.transaction() as conn:
            row = (await conn.execute(select(sessions_table))).one()
    finally:
        await durable.close()
    stored = repr(tuple(row)).encode() + b"".join(v for v in row if isinstance(v, bytes))
    assert row.id_digest == digest(cookie)
    for secret in (
        cookie,
        session.tokens.access_token,
        session.tokens.refresh_token,
        session.tokens.id_token,
    ):
        assert secret is not None and secret.encode() not in stored


async def test_a_restart_keeps_sessions(bff_database_url: str, session_key: bytes) -> None:
    cookie = new_session_id()
    first = _durable(bff_database_url, session_key)
    await first.start()
    await first.create(_session(cookie))
    await first.close()
    second = _durable(bff_database_url, session_key)
    await second.start()  # the table exists: created once, kept
    try:
        assert (await second.get(digest(cookie))) is not None
    finally:
        await second.close()


async def test_another_key_opens_nothing(bff_database_url: str, session_key: bytes) -> None:
    cookie = new_session_id()
    first = _durable(bff_database_url, session_key)
    await first.start()
    await first.create(_session(cookie))
    await first.close()
    other = _durable(bff_database_url, secrets.token_bytes(32))
    try:
        assert await other.get(digest(cookie)) is None
    finally:
        await other.close()


def test_sealed_tokens_are_bound_to_their_session(session_key: bytes) -> None:
    sealer = Sealer(session_key)
    a, b = digest(new_session_id()), digest(new_session_id())
    tokens = _session(new_session_id()).tokens
    sealed = sealer.seal_tokens(tokens, a)
    assert sealer.open_tokens(sealed, a) == tokens
    assert sealer.open_tokens(sealed, b) is None  # copied to another row: does not open
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert sealer.open_tokens(tampered, a) is None


async def test_replace_is_compare_and_set(store: SessionStore) -> None:
    cookie = new_session_id()
    session = _session(cookie)
    await store.create(session)
    newer = replace(session, tokens=structs.replace(session.tokens, access_token="eyJ.new"), version=2)
    assert await store.replace(newer, expected_version=1)
    loser = replace(session, tokens=structs.replace(session.tokens, access_token="eyJ.lost"), version=2)
    assert not await store.replace(loser, expected_version=1)  # the version moved on
    got = await store.get(digest(cookie))
    assert got is not None and got.tokens.access_token == "eyJ.new" and got.version == 2


async def test_touch_moves_the_idle_expiry(store: SessionStore) -> None:
    cookie = new_session_id()
    session = _session(cookie)
    await store.create(session)
    await store.touch(session.digest, session.last_seen_at + 100)
    got = await store.get(session.digest)
    assert got is not None and got.last_seen_at == session.last_seen_at + 100
    await store.touch(session.digest, session.last_seen_at + 50)  # never backwards
    got = await store.get(session.digest)
    assert got is not None and got.last_seen_at == session.last_seen_at + 100


async def test_purge_ends_expired_sessions(bff_database_url: str, session_key: bytes) -> None:
    durable = _durable(bff_database_url, session_key)
    await durable.start()
    try:
        now = int(time.time())
        live, idle, ended = new_session_id(), new_session_id(), new_session_id()
        await durable.create(_session(live, now=now))
        await durable.create(_session(idle, now=now - IDLE - 1))
        await durable.create(replace(_session(ended, now=now), expires_at=now - 1))
        assert await durable.purge(now, IDLE) == 2
        assert await durable.get(digest(live)) is not None
        assert await durable.get(digest(idle)) is None and await durable.get(digest(ended)) is None
    finally:
        await durable.close()


async def test_redis_loss_loses_no_session(
    bff_database_url: str, session_key: bytes, redis_prefix: str
) -> None:
    store = CachedSessions(
        _durable(bff_database_url, session_key),
        aioredis.Redis.from_url(support.REDIS_URL),
        redis_prefix,
        IDLE,
    )
    await store.start()
    try:
        cookie = new_session_id()
        session = _session(cookie)
        await store.create(session)
        sync = redis.Redis.from_url(support.REDIS_URL)
        keys = list(sync.scan_iter(match=redis_prefix + "*"))
        assert len(keys) == 1
        cached = sync.get(keys[0])
        assert cached is not None
        for secret in (cookie, session.tokens.access_token, session.tokens.refresh_token):
            assert secret is not None and secret.encode() not in cached  # sealed in Redis too
        sync.delete(*keys)  # Redis lost its data
        sync.close()
        assert await store.get(digest(cookie)) == session  # from the database, and cached again
    finally:
        await store.close()


async def test_a_redis_outage_falls_back_to_the_database(bff_database_url: str, session_key: bytes) -> None:
    dead = aioredis.Redis(
        host="127.0.0.1", port=support.free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 1)
    )  # as issuer.bff.runtime builds it
    store = CachedSessions(_durable(bff_database_url, session_key), dead, "bff-test:", IDLE)
    await store.start()
    try:
        cookie = new_session_id()
        await store.create(_session(cookie))
        assert await store.get(digest(cookie)) is not None
        await store.delete(digest(cookie))
        assert await store.get(digest(cookie)) is None
    finally:
        await store.close()


async def test_the_memory_cache_is_bounded_and_caches_no_unknown_id(
    bff_database_url: str, session_key: bytes
) -> None:
    store = MemoryCached(_durable(bff_database_url, session_key), size=2)
    await store.start()
    try:
        cookies = [new_session_id() for _ in range(3)]
        for cookie in cookies:
            await store.create(_session(cookie))
        assert len(store._entries) == 2  # the oldest went out
        assert await store.get(digest(cookies[0])) is not None  # read again from the database
        for _ in range(5):
            assert await store.get(digest(new_session_id())) is None
        assert len(store._entries) == 2
    finally:
        await store.close()


async def test_a_read_or_a_refresh_that_raced_a_logout_cannot_put_the_session_back_into_redis(
    bff_database_url: str, session_key: bytes, redis_prefix: str
) -> None:
    """Two instances on one Redis: b read the row (its fill, or a refresh's write, still to come)
    when a deleted the session. b's late write must not bring the session back: the delete leaves
    a tombstone that fills, refreshes and drops never replace."""
    a = CachedSessions(
        _durable(bff_database_url, session_key),
        aioredis.Redis.from_url(support.REDIS_URL),
        redis_prefix,
        IDLE,
    )
    b = CachedSessions(
        _durable(bff_database_url, session_key),
        aioredis.Redis.from_url(support.REDIS_URL),
        redis_prefix,
        IDLE,
    )
    async with _started(a, b):
        for late in ("fill", "refresh", "touch"):
            session = _session(new_session_id())
            await a.create(session)
            await a._forget(session.digest)  # not cached: b's read goes to the database
            read = await b.durable.get_wire(session.digest)
            assert read is not None  # b has read the row ...
            await a.delete(session.digest)  # ... and a logs the session out
            if late == "fill":  # b's get goes on: it fills Redis with what it read
                await b._cache(session.digest, read, fill=True)
            elif late == "refresh":  # b's refresh had stored new tokens before the delete
                await b._cache(session.digest, b.durable.wire(replace(session, version=2)), fill=False)
            else:  # b's touch drops the cached copy
                await b._forget(session.digest)
                await b._cache(session.digest, read, fill=True)
            assert await a.get(session.digest) is None, late
            assert await b.get(session.digest) is None, late


# ---------------------------------------------------------------- several instances


async def test_a_write_on_one_instance_is_seen_by_the_others_copy(
    bff_database_url: str, session_key: bytes, redis_prefix: str
) -> None:
    a = _shared(bff_database_url, session_key, redis_prefix)
    b = _shared(bff_database_url, session_key, redis_prefix)
    async with _started(a, b):
        assert b.invalidations is not None
        heard = b.invalidations
        await _until(lambda: heard.live, "b's subscription was not confirmed")
        await _until(lambda: a.invalidations is not None and a.invalidations.live, "a's neither")
        cookie = new_session_id()
        session = _session(cookie)
        await a.create(session)
        assert await b.get(session.digest) == session
        assert session.digest in b._entries  # b answers from its copy now

        # a refresh on a: b's next read has the new version
        seen = heard.received
        newer = replace(session, tokens=structs.replace(session.tokens, access_token="eyJ.new"), version=2)
        assert await a.replace(newer, expected_version=1)
        await _until(lambda: heard.received > seen, "b got no invalidation for the refresh")
        got = await b.get(session.digest)
        assert got is not None and got.version == 2 and got.tokens.access_token == "eyJ.new"

        # the idle expiry moved on by a
        seen = heard.received
        await a.touch(session.digest, session.last_seen_at + 100)
        await _until(lambda: heard.received > seen, "b got no invalidation for the touch")
        got = await b.get(session.digest)
        assert got is not None and got.last_seen_at == session.last_seen_at + 100

        # a logout (or a revocation, or an expiry: the same delete) on a: b's next read has none
        seen = heard.received
        await a.delete(session.digest)
        await _until(lambda: heard.received > seen, "b got no invalidation for the delete")
        assert await b.get(session.digest) is None


async def test_without_its_subscription_an_instance_does_not_answer_from_its_copy(
    bff_database_url: str, session_key: bytes, redis_prefix: str
) -> None:
    target = urlsplit(support.REDIS_URL)  # the test Redis (ISSUER_TEST_REDIS_URL), behind a relay
    proxy = support.TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    userinfo, at, _ = target.netloc.rpartition("@")
    relayed = target._replace(netloc=f"{userinfo}{at}127.0.0.1:{proxy.port}").geturl()
    a = _shared(bff_database_url, session_key, redis_prefix)
    b = _shared(bff_database_url, session_key, redis_prefix, subscribe_url=relayed)
    async with _started(a, b):
        assert b.invalidations is not None
        heard = b.invalidations
        await _until(lambda: heard.live, "b's subscription was not confirmed")
        cookie, other = new_session_id(), new_session_id()
        await a.create(_session(cookie))
        assert await b.get(digest(cookie)) is not None and digest(cookie) in b._entries

        proxy.stop()  # b's subscription is cut; its other Redis commands still go through
        await _until(lambda: not heard.live, "b did not notice its subscription was cut")
        assert not b._entries  # cleared: it may miss invalidations from now on
        await a.delete(digest(cookie))  # published, but b does not hear it
        assert await b.get(digest(cookie)) is None  # b read the store, not its copy
        await a.create(_session(other))
        assert await b.get(digest(other)) is not None
        assert not b._entries  # and filled nothing while it could not hear

        subscribed = heard.subscriptions
        proxy.start()
        await _until(lambda: heard.live and heard.subscriptions > subscribed, "b did not subscribe again")
        assert await b.get(digest(other)) is not None and digest(other) in b._entries
        proxy.stop()


async def test_two_instances_on_postgresql_without_redis_see_each_others_logout(
    empty_pg_url: str, tmp_path: Path
) -> None:
    env = {
        "BFF_URL": "https://app.example",
        "BFF_ISSUER_URL": "https://auth.example",
        "BFF_CLIENT_ID": "cl_bff",
        "BFF_CLIENT_SECRET": "s3cret-value",
        "BFF_DATABASE_URL": empty_pg_url,
        "BFF_SESSION_KEY": b64encode(secrets.token_bytes(32)),
        "BFF_KEYS_DIR": str(tmp_path),
    }
    a, b = BffRuntime(load(env)), BffRuntime(load(env))
    async with _started(a, b):
        cookie = new_session_id()
        session = _session(cookie)
        await a.store.create(session)
        assert await b.session({SESSION_COOKIE: cookie}) == session
        assert await b.session({SESSION_COOKIE: cookie}) == session
        await a.store.delete(session.digest)  # a logout on a
        assert await b.session({SESSION_COOKIE: cookie}) is None  # b: 401 on the next request
