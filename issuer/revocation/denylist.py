"""The denylist: revocations of access tokens that every instance and verifier sees within a second.

Access tokens are verified without a lookup, so revoking one means listing it here until it
would have expired anyway. This module is the one place that writes and reads that list; it
knows nothing of HTTP. The wire format is shared with resource-server verifiers
(:mod:`issuer_verify.wire`) and is a contract: change it only with a new prefix.

Entries
-------

An entry is ``{"kind", "value", "at", "exp"}``; the kinds, their matching rules, parsing and
the Redis key layout are the wire format, defined once in :mod:`issuer_verify.wire` (the
verifier's package: resource servers read what this module writes). Here ``exp`` is the longest
time a matching token can still be valid plus ``ISSUER_DENYLIST_LEEWAY`` (default 60 s).

Where entries live
------------------

* **Database** (the durable source of truth): table ``denylist``, one row per revocation, written
  first, in the same transaction as its audit event; ``id`` is the feed cursor; rows are pruned
  once ``exp`` has passed (by every running instance, once a minute).
* **Redis** (with ``ISSUER_REDIS_URL``; ``P`` = ``ISSUER_REDIS_PREFIX``, default ``issuer:``):

  - key ``P deny:KIND:VALUE`` (no spaces: ``issuer:deny:jti:abc``) holds the entry's JSON with
    a TTL of ``exp - now``; when two revocations share a key, the later ``at`` and ``exp`` win;
  - key ``P deny:loaded`` is a marker written after the copy is complete. Its absence means Redis
    lost its data (restart, ``FLUSHALL``): the issuer rebuilds every key from the database
    before it answers another check, then publishes a reset;
  - channel ``P denylist`` carries each new entry's JSON, and ``{"kind": "reset"}`` after a
    rebuild (a subscriber then reloads every ``P deny:*`` key).

* **HTTP**: ``GET /revocations?since=CURSOR`` answers ``{"entries": [...], "next_cursor": "..."}``
  with ``ETag`` and ``Cache-Control``, for verifiers that cannot reach Redis (client
  authentication as for introspection). The cursor is opaque; entries may repeat across pages.

Checks
------

With Redis, :meth:`Denylist.is_revoked` is one ``MGET`` of the marker and the token's five
possible keys: it sees a revocation made on any instance as soon as that instance's write
returned. A Sentinel or Cluster failover can lose writes the old master acknowledged (replication
is asynchronous, and an old master accepts writes until it is demoted): the database is the
source of truth, so whenever a Redis command fails (a failover kills the connections) or the
server's replication id changes, the next reconciliation pushes every live row again, and a check
that met a lost connection is answered only after it. Guarantee: once an instance's connections
have moved to the new master (Sentinel kills the old ones), its answers include every revocation
committed to the database; other copies converge within a reconciliation (a second). Redis
unreachable: :class:`~issuer.errors.TemporarilyUnavailable` (503), unless
``ISSUER_DENYLIST_FAIL_OPEN=true`` (then "not revoked", a documented risk, logged loudly).
Without Redis (the embedded default), checks read an in-process copy of the database table that
is refreshed at most a second old, so revocations made by another process (``issuer sessions
revoke``) apply within a second too.

Revoked signing keys
--------------------

:attr:`Denylist.kids` is the set of live ``kid`` entries this process knows: without Redis the
in-process copy (refreshed every second by the background task even when nothing is checked),
with Redis the rows the reconciliation reads from the database every second. The minter looks
a signing key up in it before every signature and the key ring leaves those kids out of the
JWKS; :attr:`Denylist.on_kid` callbacks (the runtime's key reload) run when a kid first appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from issuer.errors import TemporarilyUnavailable
from issuer.store.audit import AuditStore
from issuer.store.database import Database
from issuer.store.denylist import DenylistStore
from issuer_verify import wire
from issuer_verify.wire import KINDS, Entry, candidate_keys, matches

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["Denylist"]

log = logging.getLogger("issuer.revocation.denylist")

CACHE_REFRESH = 1.0  # seconds: the in-process copy (no Redis) is never older than this
SYNC_INTERVAL = 1.0  # seconds between the background database -> Redis reconciliations
PRUNE_INTERVAL = 60.0
OVERLAP = 5  # seconds: rows written this recently are re-read (commits may land out of id order)
FEED_PAGE = 1000

# Merge one entry into Redis: keep the later `at` and `exp` of the old and new entry; return the
# stored JSON when it changed (so the caller publishes only news), nil otherwise.
_MERGE = """
local at = tonumber(ARGV[3])
local exp = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local old = redis.call('GET', KEYS[1])
if old then
  local o = cjson.decode(old)
  local oat, oexp = tonumber(o['at']), tonumber(o['exp'])
  if oat >= at and oexp >= exp then return false end
  if oat > at then at = oat end
  if oexp > exp then exp = oexp end
end
if exp <= now then return false end
local json = string.format('{"kind":%s,"value":%s,"at":%d,"exp":%d}',
  cjson.encode(ARGV[1]), cjson.encode(ARGV[2]), at, exp)
redis.call('SET', KEYS[1], json, 'EX', exp - now)
return json
"""


def _redis_client(url: str) -> aioredis.Redis:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from issuer import redis_conn

    # Fail fast: a check that cannot reach Redis must become a 503 now, not after backoffs. No
    # hidden retry either: a lost connection may mean a failover that lost writes, so the denylist
    # retries itself, once, after reconciling the new server with the database (Denylist._lost).
    return redis_conn.async_client(
        url,
        socket_connect_timeout=1,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


class Denylist:
    """Writes entries (database, then Redis, then the channel) and answers "is this token revoked"."""

    def __init__(
        self,
        db: Database,
        *,
        redis_url: str | None,
        prefix: str = "issuer:",
        leeway: int = 60,
        fail_open: bool = False,
        default_ttl: int = 300,
        audit: AuditStore | None = None,
        store: DenylistStore | None = None,
        clock: Callable[[], float] = time.time,
        cache_refresh: float = CACHE_REFRESH,
    ) -> None:
        self.db = db
        self.cache_refresh = cache_refresh
        self.redis_url = redis_url
        self.prefix = prefix
        self.leeway = leeway
        self.fail_open = fail_open
        self.default_ttl = default_ttl
        self.audit = audit or AuditStore()
        self.store = store or DenylistStore()
        self.clock = clock
        self.channel = wire.channel(prefix)
        self.marker = wire.loaded_marker(prefix)
        self.redis: aioredis.Redis | None = _redis_client(redis_url) if redis_url else None
        self._errors = _redis_errors()
        self._merge: Any = self.redis.register_script(_MERGE) if self.redis is not None else None
        self._rebuild_lock = asyncio.Lock()
        self._synced_id = 0  # Redis: rows up to here were pushed by this process's reconciliation
        self._dirty = False  # a Redis write failed: reconcile before the next answer
        self._full = False  # Redis may have lost acknowledged writes: the next reconcile pushes every row
        self._server: str | None = None  # the Redis dataset last reconciled (its replication id)
        # Without Redis: the in-process copy of the table.
        self._cache: dict[tuple[str, str], Entry] = {}
        self._cache_id = 0
        self._cache_at = -1e9
        self._cache_lock = asyncio.Lock()
        # Signing keys on the denylist (kind ``kid``), mutated in place: holders keep the reference.
        self.kids: set[str] = set()
        self.on_kid: list[Callable[[str], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_open_warning = 0.0
        # Metrics: entries written by this process per (kind, reason), Redis errors met.
        self.additions: Counter[tuple[str, str]] = Counter()
        self.redis_errors = 0

    # ------------------------------------------------------------------ lifecycle

    def key(self, kind: str, value: str) -> str:
        return wire.entry_key(self.prefix, kind, value)

    async def start(self, *, background: bool = True) -> None:
        """Warm the copy; with ``background``, reconcile Redis every second and prune every minute."""
        if self.fail_open:
            log.warning(
                "ISSUER_DENYLIST_FAIL_OPEN=true: while Redis is unreachable, REVOKED TOKENS WILL BE "
                "ACCEPTED (introspection and refresh answer as if nothing was revoked)"
            )
        if self.redis is not None:
            try:
                await self._sync()
            except self._errors as error:
                log.error("Redis unreachable at start (%s): denylist checks answer 503", type(error).__name__)
                self._lost()
        else:
            try:
                await self._refresh_cache()  # the revoked signing keys before the first token
            except TemporarilyUnavailable as error:
                log.error("database unavailable at start (%s): the denylist copy is empty", error.detail)
        if background:
            self._tasks.append(asyncio.ensure_future(self._maintain()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.redis is not None:
            await self.redis.aclose()

    async def _maintain(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                if self.redis is not None:
                    await self._sync()
                else:
                    await self._refresh_cache()  # keeps `kids` current when nothing is checked
                if time.monotonic() - last_prune >= PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    await self.prune()
            except TemporarilyUnavailable as error:
                log.warning("denylist maintenance: database unavailable (%s)", error.detail)
            except self._errors as error:
                self._lost()
                log.warning("denylist maintenance: Redis unavailable (%s)", type(error).__name__)
            except Exception:
                log.exception("denylist maintenance failed")

    # ------------------------------------------------------------------ writing

    async def longest_token_ttl(self, client_id: str | None = None) -> int:
        """The longest access-token lifetime of ``client_id`` (or of any client)."""
        async with self.db.transaction() as conn:
            client_ttl = await self.store.longest_client_ttl(conn, client_id)
        if client_id is not None and client_ttl is not None:
            return client_ttl
        return max(self.default_ttl, client_ttl or 0)

    async def add(
        self,
        kind: str,
        value: str,
        at: int,
        exp: int,
        *,
        reason: str,
        actor: str | None = None,
        subject: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
        address: str | None = None,
    ) -> Entry:
        """Revoke: ``exp`` is the latest time a matching token can still be valid (this adds the
        leeway). Written to the database with an audit event, then to Redis and the channel.

        A Redis failure after the database write is not an error: the entry is durable, checks
        fail closed while Redis is down, and the reconciliation pushes it once Redis is back.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown denylist kind {kind!r}")
        if not wire.valid_value(value):
            raise ValueError("denylist values are 1-200 printable ASCII characters without quotes")
        entry = Entry(kind, value, int(at), int(exp) + self.leeway)
        now = int(self.clock())
        async with self.db.transaction() as conn:
            await self.store.insert(conn, kind=kind, value=value, at=entry.at, exp=entry.exp, created_at=now)
            await self.audit.record(
                conn,
                at=now,
                event=f"revocation.{kind}",
                subject=subject if subject is not None else (value if kind == "sub" else None),
                client_id=client_id if client_id is not None else (value if kind == "client" else None),
                family_id=family_id if family_id is not None else (value if kind == "sid" else None),
                address=address,
                value=value,
                revoked_at=entry.at,
                until=entry.exp,
                reason=reason,
                actor=actor,
            )
        self._remember(entry)
        self.additions[(kind, reason)] += 1
        if self.redis is not None:
            try:
                try:
                    stored = await self._merge(
                        keys=[self.key(kind, value)], args=[kind, value, entry.at, entry.exp, now]
                    )
                    if stored is not None:
                        await self.redis.publish(self.channel, stored)
                except self._errors:
                    self._lost()
                    await self._sync()  # once more, on a new connection: pushes this row (and any lost)
            except self._errors as error:
                self._lost()
                log.error(
                    "denylist entry %s written to the database but not to Redis (%s); will retry",
                    kind,
                    type(error).__name__,
                )
        return entry

    def _remember(self, entry: Entry) -> None:
        key = (entry.kind, entry.value)
        known = self._cache.get(key)
        self._cache[key] = entry if known is None else known.merge(entry)
        if entry.kind == "kid" and entry.value not in self.kids:
            self.kids.add(entry.value)
            for callback in self.on_kid:
                try:
                    callback(entry.value)
                except Exception:
                    log.exception("denylist kid callback failed")

    async def prune(self) -> int:
        """Delete rows past their ``exp`` (nothing can match them any more)."""
        now = int(self.clock())
        async with self.db.transaction() as conn:
            removed = await self.store.prune(conn, now)
        for key in [key for key, entry in self._cache.items() if entry.exp <= now]:
            del self._cache[key]
            if key[0] == "kid":
                self.kids.discard(key[1])
        return removed

    # ------------------------------------------------------------------ checking

    async def is_revoked(self, claims: Mapping[str, Any], header_kid: str | None = None) -> bool:
        """True when an entry matches; :class:`TemporarilyUnavailable` when that cannot be known."""
        wanted = candidate_keys(claims, header_kid)
        if self.redis is None:
            await self._refresh_cache()
            found: Iterable[Entry] = [e for e in (self._cache.get(pair) for pair in wanted) if e is not None]
        else:
            try:
                found = await self._redis_entries(wanted)
            except self._errors as error:
                self._lost()
                if self.fail_open:
                    if time.monotonic() - self._last_open_warning > 10:
                        self._last_open_warning = time.monotonic()
                        log.error("Redis unreachable; FAILING OPEN: revoked tokens are being accepted")
                    return False
                raise TemporarilyUnavailable(detail=f"redis: {type(error).__name__}") from error
        return any(matches(entry, claims, header_kid) for entry in found)

    async def ensure_available(self) -> None:
        """Raise :class:`TemporarilyUnavailable` when checks cannot be answered now (fail closed)."""
        await self.is_revoked({})

    def _lost(self) -> None:
        """A Redis command failed. The connection may come back to another server (a Sentinel or
        Cluster failover) or to a restarted one, and either may lack writes it had acknowledged
        (replication is asynchronous; an old master keeps accepting writes until it is demoted).
        So before the next answer, reconcile every live row from the database, not only new ones."""
        self._dirty = True
        self._full = True
        self.redis_errors += 1  # a metric

    async def _redis_entries(self, wanted: list[tuple[str, str]]) -> list[Entry]:
        assert self.redis is not None
        if self._dirty:
            await self._sync()
        keys = [self.marker] + [self.key(kind, value) for kind, value in wanted]
        try:
            return await self._lookup(keys)
        except self._errors:
            # Asked once more, but only after the reconciliation: an answer from a server that
            # may have lost writes could un-revoke a token. A second failure is the caller's 503.
            self._lost()
            await self._sync()
            return await self._lookup(keys)

    async def _lookup(self, keys: list[str]) -> list[Entry]:
        assert self.redis is not None
        for _ in range(3):
            values = await self.redis.mget(keys)
            if values[0] is not None:
                return [Entry.from_json(json.loads(raw)) for raw in values[1:] if raw is not None]
            await self.rebuild()  # Redis lost its data: nothing is answered from a partial copy
        raise TemporarilyUnavailable(detail="redis: the denylist copy keeps disappearing")

    async def _refresh_cache(self) -> None:
        if time.monotonic() - self._cache_at < self.cache_refresh:
            return
        async with self._cache_lock:
            if time.monotonic() - self._cache_at < self.cache_refresh:
                return
            started = time.monotonic()
            now = int(self.clock())
            async with self.db.transaction() as conn:
                rows = await self.store.live(
                    conn, now=now, after_id=self._cache_id, recent_since=now - OVERLAP
                )
            for row in rows:
                self._remember(Entry(row.kind, row.value, row.at, row.exp))
                self._cache_id = max(self._cache_id, row.id)
            self._cache_at = started

    # ------------------------------------------------------------------ Redis copy

    async def _identity(self) -> str | None:
        """The replication id of the server holding the copy: it changes when a replica is promoted
        (a failover) or a server restarts or resyncs, i.e. whenever acknowledged writes may be gone.
        None on a Cluster (a failover there is met as lost connections, see :meth:`_lost`)."""
        from redis.asyncio.cluster import RedisCluster

        assert self.redis is not None
        if isinstance(self.redis, RedisCluster):
            return None
        info = await self.redis.info("replication")
        return str(info.get("master_replid", "")) or None

    async def _sync(self) -> None:
        """Push rows not yet known to be in Redis (and recent ones again); every live row when the
        server may have lost writes (:meth:`_lost`, or its replication id changed); rebuild if the
        copy is gone altogether."""
        assert self.redis is not None
        identity = await self._identity()
        if identity != self._server:
            if self._server is not None:
                log.warning("denylist: Redis server changed (failover or restart): reconciling every entry")
                self._full = True
            self._server = identity
        if await self.redis.exists(self.marker) == 0:
            await self.rebuild()
            return
        full = self._full
        now = int(self.clock())
        async with self.db.transaction() as conn:
            rows = await self.store.live(
                conn, now=now, after_id=0 if full else self._synced_id, recent_since=now - OVERLAP
            )
        if rows:
            async with self.redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    await self._merge(
                        keys=[self.key(row.kind, row.value)],
                        args=[row.kind, row.value, row.at, row.exp, now],
                        client=pipe,
                    )
                stored = await pipe.execute()
            news = [value for value in stored if value is not None]
            if news:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for value in news:
                        pipe.publish(self.channel, value)
                    await pipe.execute()
            self._synced_id = max(self._synced_id, max(row.id for row in rows))
            self._note_kids(rows)
        self._dirty = False
        if full:
            self._full = False

    def _note_kids(self, rows: Iterable[Any]) -> None:
        """With Redis: the ``kid`` rows read from the database (another process revoked a key)."""
        for row in rows:
            if row.kind == "kid":
                self._remember(Entry(row.kind, row.value, row.at, row.exp))

    async def rebuild(self) -> int:
        """Rewrite every live entry from the database into Redis, then the marker, then a reset."""
        assert self.redis is not None
        async with self._rebuild_lock:
            if await self.redis.exists(self.marker):
                return 0  # another coroutine (or instance) just did it
            now = int(self.clock())
            async with self.db.transaction() as conn:
                rows = await self.store.live(conn, now=now)
            for start in range(0, len(rows), 1000):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for row in rows[start : start + 1000]:
                        await self._merge(
                            keys=[self.key(row.kind, row.value)],
                            args=[row.kind, row.value, row.at, row.exp, now],
                            client=pipe,
                        )
                    await pipe.execute()
            await self.redis.set(self.marker, str(now))
            await self.redis.publish(self.channel, json.dumps(wire.RESET))
            self._synced_id = max([self._synced_id, *(row.id for row in rows)])
            self._note_kids(rows)
            self._dirty = False
            self._full = False
            log.warning("denylist rebuilt in Redis from the database (%d entries)", len(rows))
            return len(rows)

    # ------------------------------------------------------------------ feed

    async def feed(self, since: int, *, limit: int = FEED_PAGE) -> tuple[list[Entry], int]:
        """Live entries after cursor ``since``, and the next cursor.

        The next cursor stops short of rows written in the last few seconds (a concurrent
        transaction may still commit a smaller id), so those come again on the next page:
        entries may repeat, never go missing. A full page always advances.
        """
        now = int(self.clock())
        async with self.db.transaction() as conn:
            rows = await self.store.page(conn, after_id=since, now=now, limit=limit)
        entries = [Entry(row.kind, row.value, row.at, row.exp) for row in rows]
        if len(rows) >= limit:
            return entries, int(rows[-1].id)
        settled = [int(row.id) for row in rows if row.created_at < now - OVERLAP]
        return entries, max([since, *settled])
