"""The verifier's local copy of the denylist, and the two feeds that keep it current.

Entries, their matching rules and the Redis layout are the issuer's wire format,
:mod:`issuer_verify.wire`. Matching needs no network round trip: the copy is a dictionary by
``(kind, value)``, and an entry found for one of the token's claims (or its header ``kid``)
decides through :func:`~issuer_verify.wire.matches`.

The copy only grows (merging) and shrinks by expiry: an entry once seen stays until its ``exp``,
so a reconnect, a flushed Redis or a lost message can never un-revoke a token.

Feeds:

* :class:`RedisDenylist` (the ``[redis]`` extra): every entry key (a full ``SCAN`` at start and
  after every (re)subscription) and the channel (each new entry; a reset means the issuer rebuilt
  Redis: load fully again). A ``PING`` every ``heartbeat`` proves the subscription alive.
* :class:`FeedDenylist`: polls ``GET {issuer}/revocations?since=CURSOR`` with client
  credentials (a client registered ``--can-introspect``).

Either runs in one daemon thread, so it serves plain, threaded and async programs alike. When the
copy has not been confirmed current for ``max_staleness`` seconds, :meth:`Denylist.check` answers
``denylist_stale`` (fail closed) unless ``fail_open=True``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from issuer_verify import wire
from issuer_verify.wire import KINDS, Entry, matches, parse_entry

if TYPE_CHECKING:
    import redis

__all__ = ["Denylist", "FeedDenylist", "RedisDenylist"]

log = logging.getLogger("issuer_verify")


class _Tables:
    """The entries by kind, each a dictionary value -> entry (replaced whole on prune)."""

    __slots__ = KINDS

    def __init__(self) -> None:
        self.jti: dict[str, Entry] = {}
        self.sid: dict[str, Entry] = {}
        self.sub: dict[str, Entry] = {}
        self.client: dict[str, Entry] = {}
        self.kid: dict[str, Entry] = {}


class Denylist:
    """The local copy. Feeds call :meth:`merge` and :meth:`confirm`; the verifier calls
    :meth:`check`. A bare ``Denylist`` (no feed) is filled by hand and never goes stale when
    ``max_staleness`` is None."""

    def __init__(
        self,
        *,
        max_staleness: float | None = 10.0,
        fail_open: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_staleness = max_staleness
        self.fail_open = fail_open
        self._clock = clock
        self._t = _Tables()
        self._write = threading.Lock()
        self._fresh_until = -1.0 if max_staleness is not None else float("inf")
        self._ready = threading.Event()
        self._changed = threading.Condition()
        self.version = 0  # bumped on every merge that changed something; for tests and metrics
        self.loads = 0  # full loads done

    # ------------------------------------------------------------ the hot path

    def check(self, kid: str, claims: Mapping[str, Any]) -> str | None:
        """None when the token may pass; ``"revoked"``; or ``"denylist_stale"`` (fail closed)."""
        if self._clock() > self._fresh_until and not self.fail_open:
            return "denylist_stale"
        t = self._t
        # One dictionary lookup per claim that can be listed; only a hit runs the rule. (A claim
        # that is not a string finds nothing: every entry's value is a valid wire value.)
        for entry in (
            t.jti.get(claims.get("jti")),  # type: ignore[arg-type]
            t.sid.get(claims.get("sid")),  # type: ignore[arg-type]
            t.kid.get(kid),
            t.sub.get(claims.get("sub")),  # type: ignore[arg-type]
            t.client.get(claims.get("client_id")),  # type: ignore[arg-type]
        ):
            if entry is not None and matches(entry, claims, kid):
                return "revoked"
        return None

    # ------------------------------------------------------------ feeding it

    def merge(self, entries: Iterable[Any]) -> int:
        """Adds wire entries (dicts or JSON); invalid ones are logged and skipped. Returns how
        many changed the copy."""
        changed = 0
        now = int(time.time())
        with self._write:
            t = self._t
            for raw in entries:
                entry = parse_entry(raw)
                if entry is None:
                    log.warning("ignoring a malformed denylist entry")
                    continue
                if entry.exp < now:
                    continue
                table: dict[str, Entry] = getattr(t, entry.kind)
                old = table.get(entry.value)
                merged = entry if old is None else old.merge(entry)
                if merged != old:
                    table[entry.value] = merged
                    changed += 1
        if changed:
            with self._changed:
                self.version += 1
                self._changed.notify_all()
        return changed

    def prune(self) -> None:
        """Forgets entries past their ``exp`` (copy-on-write, so readers never see a half state)."""
        now = int(time.time())
        with self._write:
            fresh = _Tables()
            for kind in KINDS:
                setattr(fresh, kind, {v: e for v, e in getattr(self._t, kind).items() if e.exp >= now})
            self._t = fresh

    def confirm(self) -> None:
        """The feed has just proved the copy current."""
        if self.max_staleness is not None:
            self._fresh_until = self._clock() + self.max_staleness
        self._ready.set()

    def __len__(self) -> int:
        t = self._t
        return sum(len(getattr(t, kind)) for kind in KINDS)

    # ------------------------------------------------------------ lifecycle

    @property
    def stale(self) -> bool:
        return self._clock() > self._fresh_until

    def start(self) -> None:
        """Starts the feed (idempotent). A bare copy has none."""

    def close(self) -> None:
        """Stops the feed."""

    def wait_ready(self, timeout: float) -> bool:
        """Waits for the first full load; True when it happened."""
        return self._ready.wait(timeout)

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """Waits until :attr:`version` exceeds ``version``; True when it did."""
        with self._changed:
            return self._changed.wait_for(lambda: self.version > version, timeout)


class _ThreadedFeed(Denylist):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        raise NotImplementedError


class RedisDenylist(_ThreadedFeed):
    """The copy fed from the issuer's Redis: full load at every (re)subscription, then pub/sub.

    Needs redis-py (``pip install 'issuer-verify[redis]'``). ``url`` takes every form the issuer's
    ``ISSUER_REDIS_URL`` takes (:mod:`issuer_verify.redis_conn`); ``prefix`` is its
    ``ISSUER_REDIS_PREFIX``."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "issuer:",
        heartbeat: float = 1.0,
        reconnect_delay: float = 0.5,
        max_staleness: float | None = 10.0,
        fail_open: bool = False,
        client_name: str = "issuer-verify-denylist",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ImportError("RedisDenylist needs redis-py: pip install 'issuer-verify[redis]'") from None
        super().__init__(max_staleness=max_staleness, fail_open=fail_open, clock=clock)
        self.url = url
        self.prefix = prefix
        self.channel = wire.channel(prefix)
        self.heartbeat = heartbeat
        self.reconnect_delay = reconnect_delay
        self.client_name = client_name

    def _full_load(self, client: redis.Redis) -> None:
        pattern = wire.entry_pattern(self.prefix)
        batch: list[bytes] = []
        entry_keys = tuple(start.encode() for start in wire.entry_key_prefixes(self.prefix))
        for key in client.scan_iter(match=pattern, count=1000):
            if not key.startswith(entry_keys):
                continue  # e.g. the issuer's "deny:loaded" marker
            batch.append(key)
            if len(batch) >= 500:
                self.merge(v for v in client.mget(batch) if v is not None)
                batch.clear()
        if batch:
            self.merge(v for v in client.mget(batch) if v is not None)
        self.prune()
        self.loads += 1

    def _run(self) -> None:
        import redis

        from issuer_verify import redis_conn

        while not self._stop.is_set():
            client = redis_conn.sync_client(
                self.url,
                socket_connect_timeout=max(self.heartbeat, 1.0),
                socket_timeout=max(self.max_staleness or 5.0, 1.0),
                client_name=self.client_name,
            )
            pubsub = client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
            try:
                pubsub.subscribe(self.channel)
                last_ping = self._clock()
                last_prune = last_ping
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=min(self.heartbeat, 0.25))
                    if message is not None:
                        self._handle(client, message)
                    now = self._clock()
                    if now - last_ping >= self.heartbeat:
                        pubsub.ping()
                        last_ping = now
                    if now - last_prune >= 60:
                        self.prune()
                        last_prune = now
            except (redis.RedisError, OSError) as error:
                log.warning("denylist feed from Redis interrupted (%s); reconnecting", type(error).__name__)
                self._stop.wait(self.reconnect_delay)
            finally:
                pubsub.close()
                client.close()

    def _handle(self, client: redis.Redis, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "subscribe":
            # The first subscription, or redis-py's silent resubscription after a reconnect:
            # whatever was published meanwhile is in the keys, so load them all.
            self._full_load(client)
            self.confirm()
        elif kind == "pong":
            self.confirm()
        elif kind == "message":
            data = message["data"]
            try:
                decoded = json.loads(data)
            except ValueError:
                log.warning("ignoring a malformed denylist message")
                return
            if wire.is_reset(decoded):
                self._full_load(client)
                self.confirm()
            else:
                self.merge([decoded])


class FeedDenylist(_ThreadedFeed):
    """The copy fed by polling the issuer's HTTP feed (for resource servers without Redis)."""

    def __init__(
        self,
        issuer: str,
        *,
        client_id: str,
        client_secret: str,
        poll_interval: float = 1.0,
        feed_url: str | None = None,
        max_staleness: float | None = 10.0,
        fail_open: bool = False,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_staleness=max_staleness, fail_open=fail_open, clock=clock)
        self.feed_url = feed_url or issuer.rstrip("/") + "/revocations"
        self.poll_interval = poll_interval
        self._auth = (client_id, client_secret)
        self._timeout = timeout
        self.cursor: str | None = None
        self._etag: str | None = None

    def poll(self, http: httpx.Client) -> None:
        """One round: fetch pages since the cursor until the feed has nothing newer."""
        for _ in range(1000):  # bounded: a feed that never stops paging is a bug, not a loop
            params = {"since": self.cursor} if self.cursor is not None else {}
            headers = {"If-None-Match": self._etag} if self._etag else {}
            response = http.get(self.feed_url, params=params, headers=headers, auth=self._auth)
            if response.status_code == 304:
                break
            if response.status_code in (400, 404, 410) and self.cursor is not None:
                log.warning("the revocation feed refused our cursor; loading it from the beginning")
                self.cursor, self._etag = None, None
                continue
            response.raise_for_status()
            body = response.json()
            entries, cursor = body.get("entries"), body.get("next_cursor")
            if not isinstance(entries, list):
                raise ValueError("the revocation feed's body has no entries array")
            if self.cursor is None:
                self.loads += 1
            self.merge(entries)
            self._etag = response.headers.get("etag")
            if not entries or cursor is None or cursor == self.cursor:
                if cursor is not None:
                    self.cursor = str(cursor)
                break
            self.cursor = str(cursor)
        self.confirm()

    def _run(self) -> None:
        last_prune = self._clock()
        with httpx.Client(timeout=self._timeout, follow_redirects=False) as http:
            while not self._stop.is_set():
                try:
                    self.poll(http)
                except (httpx.HTTPError, ValueError) as error:
                    log.warning("revocation feed unavailable (%s)", type(error).__name__)
                if self._clock() - last_prune >= 60:
                    self.prune()
                    last_prune = self._clock()
                self._stop.wait(self.poll_interval)
