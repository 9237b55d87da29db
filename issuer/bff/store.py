"""The BFF's session store: the database as the durable record, Redis (optional) as a cache.

:class:`DatabaseSessions` owns the one table, ``bff_sessions`` (its own :class:`MetaData`, created
when missing at start: the BFF's database is its own, or a schema shared with nothing of the
issuer's migrations). :class:`CachedSessions` puts Redis in front: reads try Redis first and fill
it from the database on a miss; writes go to the database first, then to Redis; a Redis outage
is logged and the database answers alone, and a Redis that lost its data loses no session.
:class:`MemoryCached` keeps the sessions read recently in process: with Redis in front of
:class:`CachedSessions`, kept exact across instances by invalidations over pub/sub
(:mod:`issuer.bff.invalidation`); without Redis only on SQLite (the embedded default: one process
writes). A PostgreSQL database without Redis is read directly on every request, so that several
instances may share it (a logout on one is a 401 on the next request to any other).

Rows hold the SHA-256 of the cookie value, never the value, and the tokens only sealed
(:class:`issuer.bff.sessions.Sealer`). A refresh stores its new tokens with a compare-and-set on
``version`` (:meth:`SessionStore.replace`), so that of two writers only one wins.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from issuer.bff.invalidation import Invalidations
from issuer.bff.sessions import Sealer, Session
from issuer.store.database import Database

__all__ = ["CachedSessions", "DatabaseSessions", "MemoryCached", "SessionStore", "metadata", "sessions_table"]

log = logging.getLogger("issuer.bff")

metadata = MetaData()

sessions_table = Table(
    "bff_sessions",
    metadata,
    Column("id_digest", LargeBinary(32), primary_key=True),  # SHA-256 of the cookie value
    Column("subject", Text, nullable=False),
    Column("sid", Text, nullable=True, index=True),  # the refresh family (access token's sid)
    Column("claims", Text, nullable=False),  # the id_token's claims, JSON
    Column("sealed", LargeBinary, nullable=False),  # AES-GCM(tokens), bound to id_digest
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("version", Integer, nullable=False),
)


class SessionStore(Protocol):
    """What the BFF needs of its sessions."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, session: Session) -> None: ...

    async def get(self, session_digest: bytes) -> Session | None: ...

    async def replace(self, session: Session, expected_version: int) -> bool:
        """Store ``session`` (its new tokens and ``version``) if the stored one still has
        ``expected_version``; False when another writer got there first or it is gone."""
        ...

    async def touch(self, session_digest: bytes, now: int) -> None: ...

    async def delete(self, session_digest: bytes) -> None: ...


class _Wire(msgspec.Struct, frozen=True, array_like=True):
    """A session as Redis keeps it (tokens still sealed)."""

    subject: str
    sid: str | None
    claims: str
    sealed: bytes
    created_at: int
    last_seen_at: int
    expires_at: int
    version: int


class DatabaseSessions:
    """Sessions in SQLite or PostgreSQL (:class:`issuer.store.database.Database`: outages are 503)."""

    def __init__(self, db: Database, sealer: Sealer) -> None:
        self.db = db
        self.sealer = sealer

    async def start(self) -> None:
        async with self.db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all, checkfirst=True)

    async def close(self) -> None:
        await self.db.close()

    def _row(self, session: Session) -> dict[str, Any]:
        return {
            "subject": session.subject,
            "sid": session.sid,
            "claims": json.dumps(session.claims, separators=(",", ":")),
            "sealed": self.sealer.seal_tokens(session.tokens, session.digest),
            "created_at": session.created_at,
            "last_seen_at": session.last_seen_at,
            "expires_at": session.expires_at,
            "version": session.version,
        }

    def wire(self, session: Session) -> _Wire:
        return _Wire(**self._row(session))

    def from_wire(self, session_digest: bytes, wire: _Wire) -> Session | None:
        tokens = self.sealer.open_tokens(wire.sealed, session_digest)
        if tokens is None:  # sealed under another key (rotated BFF_SESSION_KEY) or tampered with
            return None
        return Session(
            digest=session_digest,
            subject=wire.subject,
            claims=json.loads(wire.claims),
            tokens=tokens,
            created_at=wire.created_at,
            last_seen_at=wire.last_seen_at,
            expires_at=wire.expires_at,
            sid=wire.sid,
            version=wire.version,
        )

    async def create(self, session: Session) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(insert(sessions_table).values(id_digest=session.digest, **self._row(session)))

    async def get_wire(self, session_digest: bytes) -> _Wire | None:
        t = sessions_table
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(
                    select(
                        t.c.subject,
                        t.c.sid,
                        t.c.claims,
                        t.c.sealed,
                        t.c.created_at,
                        t.c.last_seen_at,
                        t.c.expires_at,
                        t.c.version,
                    ).where(t.c.id_digest == session_digest)
                )
            ).first()
        return None if row is None else _Wire(*row)

    async def get(self, session_digest: bytes) -> Session | None:
        wire = await self.get_wire(session_digest)
        return None if wire is None else self.from_wire(session_digest, wire)

    async def replace(self, session: Session, expected_version: int) -> bool:
        t = sessions_table
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(t)
                .where(t.c.id_digest == session.digest, t.c.version == expected_version)
                .values(**self._row(session))
            )
        return bool(result.rowcount == 1)

    async def touch(self, session_digest: bytes, now: int) -> None:
        t = sessions_table
        async with self.db.transaction() as conn:
            await conn.execute(
                update(t)
                .where(t.c.id_digest == session_digest, t.c.last_seen_at < now)
                .values(last_seen_at=now)
            )

    async def delete(self, session_digest: bytes) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(delete(sessions_table).where(sessions_table.c.id_digest == session_digest))

    async def purge(self, now: int, idle_ttl: int) -> int:
        """Delete the sessions that ended (absolute or idle expiry); returns how many."""
        t = sessions_table
        async with self.db.transaction() as conn:
            result = await conn.execute(
                delete(t).where((t.c.expires_at <= now) | (t.c.last_seen_at <= now - idle_ttl))
            )
        return int(result.rowcount or 0)


# A deleted session's key holds this, for the idle lifetime, instead of disappearing: a reader that
# read the row just before the delete (another instance, another task) then cannot put the session
# back into Redis with its fill, nor a refresh that raced the delete with its write. Session
# digests are never reused, so a key that holds it means "no such session" for good.
GONE = b"\x00gone"

# KEYS[1] the session's key; ARGV: value, ttl, GONE, "1" to write only where nothing is held
_PUT = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[3] or (ARGV[4] == '1' and held) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# KEYS[1] the session's key; ARGV[1] GONE: drop a cached copy, never a tombstone
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class CachedSessions:
    """:class:`DatabaseSessions` with Redis in front (``PREFIX + "s:" + hex digest``, TTL = the
    session's remaining life). Redis errors fall back to the database (logged, never raised).

    A delete leaves :data:`GONE` in the key; a fill after a database read writes only where the
    key holds nothing, a refresh's write and a touch's drop never replace :data:`GONE` (each one
    script, so the check and the write are one step): a logout cannot be undone by a read or a
    refresh that raced it."""

    def __init__(self, durable: DatabaseSessions, redis: aioredis.Redis, prefix: str, idle_ttl: int) -> None:
        self.durable = durable
        self.redis = redis
        self.prefix = prefix
        self.idle_ttl = idle_ttl
        self._put: Any = redis.register_script(_PUT)
        self._drop: Any = redis.register_script(_DROP)

    def _key(self, session_digest: bytes) -> str:
        return f"{self.prefix}s:{session_digest.hex()}"

    async def start(self) -> None:
        await self.durable.start()

    async def close(self) -> None:
        await self.durable.close()
        await self.redis.aclose()

    async def _cache(self, session_digest: bytes, wire: _Wire, *, fill: bool) -> None:
        """Put ``wire`` in Redis; ``fill`` (after a database read): only where the key holds
        nothing. Never over :data:`GONE`."""
        ttl = min(wire.last_seen_at + self.idle_ttl, wire.expires_at) - _now()
        if ttl <= 0:
            return
        value = msgspec.msgpack.encode(wire)
        try:
            await self._put(keys=[self._key(session_digest)], args=[value, ttl, GONE, "1" if fill else "0"])
        except RedisError as error:
            log.warning("bff session cache: redis write failed", extra={"error": type(error).__name__})

    async def _forget(self, session_digest: bytes) -> None:
        try:
            await self._drop(keys=[self._key(session_digest)], args=[GONE])
        except RedisError as error:
            log.warning("bff session cache: redis delete failed", extra={"error": type(error).__name__})

    async def _bury(self, session_digest: bytes) -> None:
        try:
            await self.redis.set(self._key(session_digest), GONE, ex=max(self.idle_ttl, 1))
        except RedisError as error:
            log.warning("bff session cache: redis delete failed", extra={"error": type(error).__name__})

    async def create(self, session: Session) -> None:
        await self.durable.create(session)
        await self._cache(session.digest, self.durable.wire(session), fill=False)

    async def get(self, session_digest: bytes) -> Session | None:
        try:
            raw = await self.redis.get(self._key(session_digest))
        except RedisError as error:
            log.warning("bff session cache: redis read failed", extra={"error": type(error).__name__})
            raw = None
        if raw is not None and _as_bytes(raw) == GONE:
            return None
        if raw is not None:
            try:
                wire = msgspec.msgpack.decode(_as_bytes(raw), type=_Wire)
                return self.durable.from_wire(session_digest, wire)
            except msgspec.DecodeError:
                pass
        stored = await self.durable.get_wire(session_digest)
        if stored is None:
            return None
        await self._cache(session_digest, stored, fill=True)
        return self.durable.from_wire(session_digest, stored)

    async def replace(self, session: Session, expected_version: int) -> bool:
        if not await self.durable.replace(session, expected_version):
            await self._forget(session.digest)  # whatever Redis holds may be stale
            return False
        await self._cache(session.digest, self.durable.wire(session), fill=False)
        return True

    async def touch(self, session_digest: bytes, now: int) -> None:
        await self.durable.touch(session_digest, now)
        await self._forget(session_digest)  # the next read refills it with the new idle expiry

    async def delete(self, session_digest: bytes) -> None:
        await self.durable.delete(session_digest)
        await self._bury(session_digest)


class MemoryCached:
    """A store with an in-process cache in front: bounded (least recently used out first), each
    entry kept at most ``ttl`` seconds. A SQLite read costs a couple of milliseconds (a thread hop
    and a transaction), a Redis ``GET`` 0.5-1.5 ms on a loaded machine; a dictionary lookup,
    microseconds.

    Exact when every write goes through this object: without ``invalidations``, one process on its
    own SQLite file (the embedded default); with them (Redis), every instance's writes publish the
    session's digest and every instance evicts it (:mod:`issuer.bff.invalidation`), and while the
    subscription is not known to be alive the cache is cleared and bypassed. A read that a write
    or an invalidation overtook (``_generation`` moved) does not fill the cache."""

    def __init__(
        self,
        inner: SessionStore,
        *,
        size: int = 10_000,
        ttl: float = 60.0,
        invalidations: Invalidations | None = None,
    ) -> None:
        self.inner = inner
        self.size = size
        self.ttl = ttl
        self.invalidations = invalidations
        self._entries: OrderedDict[bytes, tuple[float, Session | None]] = OrderedDict()
        self._generation = 0
        if invalidations is not None:
            invalidations.on_evict = self._evict
            invalidations.on_reset = self._reset

    def _put(self, session_digest: bytes, session: Session | None) -> None:
        self._entries[session_digest] = (time.monotonic() + self.ttl, session)
        self._entries.move_to_end(session_digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def _evict(self, session_digest: bytes) -> None:
        self._generation += 1
        self._entries.pop(session_digest, None)

    def _reset(self) -> None:
        self._generation += 1
        self._entries.clear()

    def _exact(self) -> bool:
        """May the cache answer now? Not while the invalidation channel is not alive (then it is
        emptied: it may have missed messages)."""
        if self.invalidations is None or self.invalidations.live:
            return True
        if self._entries:
            self._reset()
        return False

    async def _published(self, session_digest: bytes) -> None:
        if self.invalidations is not None:
            await self.invalidations.publish(session_digest)

    async def start(self) -> None:
        await self.inner.start()
        if self.invalidations is not None:
            self.invalidations.start()

    async def close(self) -> None:
        if self.invalidations is not None:
            await self.invalidations.close()
        self._entries.clear()
        await self.inner.close()

    async def create(self, session: Session) -> None:
        await self.inner.create(session)
        if self._exact():
            self._put(session.digest, session)

    async def get(self, session_digest: bytes) -> Session | None:
        if self._exact():
            entry = self._entries.get(session_digest)
            if entry is not None and entry[0] > time.monotonic():
                self._entries.move_to_end(session_digest)
                return entry[1]
        generation = self._generation
        session = await self.inner.get(session_digest)
        if session is None:  # unknown ids are not cached: guessing cannot fill the cache
            self._entries.pop(session_digest, None)
        elif generation == self._generation and self._exact():
            self._put(session_digest, session)
        return session

    async def replace(self, session: Session, expected_version: int) -> bool:
        self._evict(session.digest)
        if not await self.inner.replace(session, expected_version):
            return False
        await self._published(session.digest)
        if self._exact():
            self._put(session.digest, session)
        return True

    async def touch(self, session_digest: bytes, now: int) -> None:
        await self.inner.touch(session_digest, now)
        entry = self._entries.get(session_digest)
        self._generation += 1  # a read under way may have the old idle expiry
        if entry is not None and entry[1] is not None and entry[1].last_seen_at < now:
            self._entries[session_digest] = (entry[0], dataclasses.replace(entry[1], last_seen_at=now))
        await self._published(session_digest)

    async def delete(self, session_digest: bytes) -> None:
        self._evict(session_digest)
        await self.inner.delete(session_digest)
        await self._published(session_digest)


def _as_bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode("latin-1")


def _now() -> int:
    return int(time.time())
