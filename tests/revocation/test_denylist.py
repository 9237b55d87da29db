"""The denylist itself, over real SQLite and PostgreSQL and real Redis: matching rules, the wire
format shared with verifiers, the in-process copy, the Redis copy and its rebuild, the feed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from issuer.errors import TemporarilyUnavailable
from issuer.revocation.denylist import Denylist
from issuer.store.database import Database
from issuer_verify.wire import KINDS, Entry, matches
from tests import support
from tests.revocation.support import redis_server, resource_server_copy, until

NOW = int(time.time())  # refreshed before every test (the suite can run longer than an entry lives)


@pytest.fixture(autouse=True)
def _fresh_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "NOW", int(time.time()))


# (id, entry, claims, header kid, revoked?)
MATCHING = [
    ("jti matches its token", Entry("jti", "j1", NOW, NOW + 60), {"jti": "j1"}, None, True),
    ("jti leaves other tokens", Entry("jti", "j1", NOW, NOW + 60), {"jti": "j2"}, None, False),
    (
        "sid kills every token of the family",
        Entry("sid", "s1", NOW, NOW + 60),
        {"sid": "s1", "iat": NOW + 9},
        None,
        True,
    ),
    ("sid leaves tokens without sid", Entry("sid", "s1", NOW, NOW + 60), {"jti": "x"}, None, False),
    (
        "sub kills tokens issued before",
        Entry("sub", "u1", NOW, NOW + 60),
        {"sub": "u1", "iat": NOW - 5},
        None,
        True,
    ),
    (
        "sub kills tokens of the same second",
        Entry("sub", "u1", NOW, NOW + 60),
        {"sub": "u1", "iat": NOW},
        None,
        True,
    ),
    (
        "sub spares tokens issued after",
        Entry("sub", "u1", NOW, NOW + 60),
        {"sub": "u1", "iat": NOW + 1},
        None,
        False,
    ),
    (
        "sub spares other subjects",
        Entry("sub", "u1", NOW, NOW + 60),
        {"sub": "u2", "iat": NOW - 5},
        None,
        False,
    ),
    ("sub without iat fails closed", Entry("sub", "u1", NOW, NOW + 60), {"sub": "u1"}, None, True),
    (
        "client kills its tokens before",
        Entry("client", "c1", NOW, NOW + 60),
        {"client_id": "c1", "iat": NOW},
        None,
        True,
    ),
    (
        "client spares later tokens",
        Entry("client", "c1", NOW, NOW + 60),
        {"client_id": "c1", "iat": NOW + 1},
        None,
        False,
    ),
    ("client is not sub", Entry("client", "c1", NOW, NOW + 60), {"sub": "c1", "iat": NOW - 1}, None, False),
    ("kid kills tokens signed by the key", Entry("kid", "k1", NOW, NOW + 60), {"jti": "x"}, "k1", True),
    ("kid spares other keys", Entry("kid", "k1", NOW, NOW + 60), {"jti": "x"}, "k2", False),
]


@pytest.mark.parametrize(
    ("entry", "claims", "kid", "revoked"), [c[1:] for c in MATCHING], ids=[c[0] for c in MATCHING]
)
def test_matching_rules(entry: Entry, claims: dict[str, Any], kid: str | None, revoked: bool) -> None:
    assert matches(entry, claims, kid) is revoked


def test_entries_parse_strictly() -> None:
    good = {"kind": "sub", "value": "usr_1", "at": 10, "exp": 20}
    assert Entry.from_json(good) == Entry("sub", "usr_1", 10, 20)
    for bad in (
        {**good, "kind": "reset"},
        {**good, "value": 'a"b'},
        {**good, "value": ""},
        {**good, "at": "10"},
        {**good, "exp": 1.5},
        {**good, "at": True},
    ):
        with pytest.raises(ValueError):
            Entry.from_json(bad)


def make(db: Database, redis_url: str | None = None, prefix: str = "issuer:", **kwargs: Any) -> Denylist:
    return Denylist(db, redis_url=redis_url, prefix=prefix, leeway=60, cache_refresh=0, **kwargs)


async def test_bad_input_is_refused_and_nothing_is_written(db: Database) -> None:
    denylist = make(db)
    with pytest.raises(ValueError, match="unknown denylist kind"):
        await denylist.add("user", "u1", NOW, NOW + 60, reason="test")
    with pytest.raises(ValueError, match="printable ASCII"):
        await denylist.add("sub", "has space", NOW, NOW + 60, reason="test")
    assert (await denylist.feed(0))[0] == []


async def test_without_redis_another_process_sees_the_entry(db: Database) -> None:
    """The embedded default: the check reads the database through the in-process copy."""
    writer, reader = make(db), make(db)
    claims = {"sub": "usr_a", "iat": NOW - 1, "jti": "j", "client_id": "c"}
    assert await reader.is_revoked(claims) is False  # the reader's copy is loaded now
    entry = await writer.add("sub", "usr_a", NOW, NOW + 300, reason="log out everywhere", actor="test")
    assert entry == Entry("sub", "usr_a", NOW, NOW + 300 + 60)  # the leeway is added
    assert await reader.is_revoked(claims) is True
    assert await reader.is_revoked(dict(claims, iat=NOW + 1)) is False


async def test_every_entry_is_audited(db: Database) -> None:
    from issuer.store.audit import AuditStore

    await make(db).add(
        "client", "cli_x", NOW, NOW + 10, reason="compromised", actor="operator", address="10.0.0.1"
    )
    async with db.transaction() as conn:
        events = await AuditStore().since(conn, 0)
    assert [(e.event, e.client_id, e.address) for e in events] == [("revocation.client", "cli_x", "10.0.0.1")]
    assert json.loads(events[0].detail)["reason"] == "compromised"


async def test_expired_entries_are_pruned(db: Database) -> None:
    denylist = make(db)
    await denylist.add("jti", "old", NOW - 1000, NOW - 900, reason="test")  # forgettable since NOW - 840
    await denylist.add("jti", "new", NOW, NOW + 100, reason="test")
    assert await denylist.prune() == 1
    entries, _ = await denylist.feed(0)
    assert [e.value for e in entries] == ["new"]
    assert await denylist.is_revoked({"jti": "new"}) is True


async def test_feed_pages_and_cursor(db: Database) -> None:
    clock_now = [float(NOW)]
    denylist = make(db, clock=lambda: clock_now[0])
    for i in range(5):
        await denylist.add("jti", f"j{i}", NOW, NOW + 100, reason="test")
    entries, cursor = await denylist.feed(0, limit=2)
    assert [e.value for e in entries] == ["j0", "j1"]  # a full page advances
    entries, cursor2 = await denylist.feed(cursor, limit=100)
    assert [e.value for e in entries] == ["j2", "j3", "j4"]
    assert cursor2 == cursor  # just written: they come again (a smaller id may still commit)
    clock_now[0] += 30
    entries, cursor3 = await denylist.feed(cursor, limit=100)
    assert [e.value for e in entries] == ["j2", "j3", "j4"]
    assert cursor3 > cursor
    assert (await denylist.feed(cursor3))[0] == []


# ---------------------------------------------------------------- with Redis


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(support.REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def pair(pg_url: str, redis_prefix: str) -> AsyncIterator[Callable[..., Denylist]]:
    database = Database(pg_url)
    made: list[Denylist] = []

    def factory(**kwargs: Any) -> Denylist:
        denylist = make(database, support.REDIS_URL, redis_prefix, **kwargs)
        made.append(denylist)
        return denylist

    yield factory
    for denylist in made:
        await denylist.close()
    await database.close()


async def test_redis_wire_format(
    pair: Callable[..., Denylist], redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    denylist = pair()
    await denylist.start(background=False)
    assert await redis_client.get(f"{redis_prefix}deny:loaded") is not None
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"{redis_prefix}denylist")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    now = int(time.time())
    await denylist.add("sid", "sid_abc", now, now + 300, reason="test")
    key = f"{redis_prefix}deny:sid:sid_abc"
    assert json.loads(await redis_client.get(key)) == {
        "kind": "sid",
        "value": "sid_abc",
        "at": now,
        "exp": now + 360,
    }
    assert 350 <= await redis_client.ttl(key) <= 360
    message = None
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            break
    assert message is not None
    assert json.loads(message["data"]) == {"kind": "sid", "value": "sid_abc", "at": now, "exp": now + 360}
    await pubsub.aclose()


async def test_a_later_revocation_of_the_same_key_wins(
    pair: Callable[..., Denylist], redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    denylist = pair()
    await denylist.start(background=False)
    await denylist.add("sub", "usr_b", NOW - 10, NOW + 100, reason="first")
    await denylist.add("sub", "usr_b", NOW, NOW + 200, reason="second")
    await denylist.add("sub", "usr_b", NOW - 20, NOW + 50, reason="an older one arriving late")
    stored = json.loads(await redis_client.get(f"{redis_prefix}deny:sub:usr_b"))
    assert (stored["at"], stored["exp"]) == (NOW, NOW + 260)


async def test_another_instance_sees_it_at_once(pair: Callable[..., Denylist]) -> None:
    writer, reader = pair(), pair()
    await writer.start(background=False)
    await reader.start(background=False)
    claims = {"jti": "j-1", "sub": "usr_c", "client_id": "c", "iat": NOW}
    assert await reader.is_revoked(claims) is False
    await writer.add("jti", "j-1", NOW, NOW + 60, reason="test")
    assert await reader.is_revoked(claims) is True


async def test_lost_redis_data_is_rebuilt_before_any_answer(
    pair: Callable[..., Denylist], redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    """Every key of this prefix disappears (what FLUSHALL does to them): the next check rebuilds
    the copy from the database first, and so never answers "not revoked" for a revoked token."""
    writer, reader = pair(), pair()
    await writer.start(background=False)
    await reader.start(background=False)
    await writer.add("client", "cli_z", NOW, NOW + 60, reason="test")
    keys = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert f"{redis_prefix}deny:client:cli_z" in keys
    await redis_client.delete(*keys)
    assert await reader.is_revoked({"client_id": "cli_z", "iat": NOW - 1}) is True
    assert await redis_client.get(f"{redis_prefix}deny:loaded") is not None
    assert await redis_client.get(f"{redis_prefix}deny:client:cli_z") is not None


async def test_a_write_redis_missed_is_pushed_by_reconciliation(
    pair: Callable[..., Denylist], redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    """A writer that died between the database and Redis: the next reconciliation pushes the row."""
    writer, other = pair(), pair()
    await other.start(background=False)
    await writer.add("jti", "j-missed", NOW, NOW + 60, reason="test")
    await redis_client.delete(f"{redis_prefix}deny:jti:j-missed")  # as if Redis never got it
    await other._sync()
    assert await redis_client.get(f"{redis_prefix}deny:jti:j-missed") is not None


async def test_a_resource_servers_copy_follows_the_channel(
    pair: Callable[..., Denylist], redis_prefix: str
) -> None:
    """What the server writes, the verifier's RedisDenylist reads: keys at start, then the channel."""
    denylist = pair()
    await denylist.start(background=False)
    await denylist.add("jti", "before", NOW, NOW + 60, reason="test")
    with resource_server_copy(support.REDIS_URL, redis_prefix) as copy:
        assert copy.check("k", {"jti": "before"}) == "revoked"  # loaded at start
        version = copy.version
        await denylist.add("sub", "usr_m", NOW, NOW + 60, reason="test")
        assert copy.wait_for_version(version, 15)
        assert copy.check("k", {"sub": "usr_m", "iat": NOW}) == "revoked"
        assert copy.check("k", {"sub": "usr_m", "iat": NOW + 1}) is None


async def test_unreachable_redis_fails_closed(pg_url: str, tmp_path: Path) -> None:
    database = Database(pg_url)
    nowhere = f"redis://127.0.0.1:{support.free_port()}/0"
    closed = make(database, nowhere)
    opened = make(database, nowhere, fail_open=True)
    try:
        await closed.start(background=False)  # logs, does not fail: requests will answer 503
        with pytest.raises(TemporarilyUnavailable):
            await closed.is_revoked({"jti": "x"})
        assert await opened.is_revoked({"jti": "x"}) is False
        # A revocation while Redis is down is still durable (and reaches Redis once it is back).
        await closed.add("jti", "x", NOW, NOW + 60, reason="test")
        assert [e.value for e in (await closed.feed(0))[0]] == ["x"]
    finally:
        await closed.close()
        await opened.close()
        await database.close()


async def test_a_failover_that_lost_a_write_is_reconciled_before_the_next_answer(
    pg_url: str, tmp_path: Path
) -> None:
    """What a Sentinel failover does to an instance: its connections are killed (Sentinel's
    ``CLIENT KILL``) and come back to a server that lacks an acknowledged write (replication is
    asynchronous), though it has the copy's marker. The next check must reconcile every live row
    from the database first, not only recent ones, and so never answer "not revoked"."""
    database = Database(pg_url)
    clock = [float(NOW)]
    with redis_server(tmp_path) as server:
        writer = make(database, server.url)
        reader = make(database, server.url, clock=lambda: clock[0])
        admin = server.client()
        try:
            await writer.start(background=False)
            await reader.start(background=False)
            await writer.add("sid", "sid_lost", NOW, NOW + 300, reason="test")
            claims = {"sid": "sid_lost"}
            assert await reader.is_revoked(claims) is True
            await reader._sync()  # the reader's reconciliation has seen the row: it is not "new"
            clock[0] += 60  # nor recent any more
            admin.delete("issuer:deny:sid:sid_lost")  # the new master never got it
            admin.client_kill_filter(_type="normal", skipme=True)  # the failover's CLIENT KILL
            assert await reader.is_revoked(claims) is True
            assert admin.get("issuer:deny:sid:sid_lost") is not None  # and the copy is whole again
        finally:
            admin.close()
            await writer.close()
            await reader.close()
            await database.close()


def test_kinds_are_the_documented_ones() -> None:
    assert KINDS == ("jti", "sid", "sub", "client", "kid")


async def test_a_resource_servers_copy_never_forgets_on_a_reset_from_an_empty_redis(
    pair: Callable[..., Denylist], redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    """A reset (or reconnection) while Redis is still empty must not un-revoke anything."""
    denylist = pair()
    await denylist.start(background=False)
    await denylist.add("jti", "kept", NOW, NOW + 60, reason="test")
    with resource_server_copy(support.REDIS_URL, redis_prefix) as copy:
        assert copy.check("k", {"jti": "kept"}) == "revoked"
        keys = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")]
        await redis_client.delete(*keys)
        loads = copy.loads
        await redis_client.publish(f"{redis_prefix}denylist", json.dumps({"kind": "reset"}))
        assert until(lambda: copy.loads > loads)  # the reset made it load every key again
        assert copy.check("k", {"jti": "kept"}) == "revoked"
