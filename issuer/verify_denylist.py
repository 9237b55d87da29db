"""The verifier's local copy of the denylist, and the two feeds that keep it current.

An entry (the issuer's wire format) is ``{"kind", "value", "at", "exp"}``: ``kind`` is ``jti``,
``sid`` (a refresh family), ``sub`` or ``client`` (every token issued at or before ``at``), or
``kid`` (a signing key); ``exp`` is when the entry may be forgotten (no token it matches outlives
it). Matching, without any network round trip:

* ``jti`` == claims ``jti``; ``sid`` == claims ``sid``; ``kid`` == the JWS header ``kid``;
* ``sub`` == claims ``sub`` and claims ``iat`` <= ``at``; ``client`` likewise with ``client_id``.

The copy only grows (merging) and shrinks by expiry: an entry once seen stays until its ``exp``,
so a reconnect, a flushed Redis or a lost message can never un-revoke a token.

Feeds:

* :class:`RedisDenylist`: keys ``{prefix}deny:{kind}:{value}`` (a full ``SCAN`` at start and after
  every (re)subscription) and the channel ``{prefix}denylist`` (each new entry; ``{"kind":
  "reset"}`` means the issuer rebuilt Redis: load fully again). A ``PING`` every ``heartbeat``
  proves the subscription alive.
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
from typing import Any

import httpx
import redis

from issuer import redis_conn

__all__ = ["KINDS", "Denylist", "FeedDenylist", "RedisDenylist", "parse_entry"]

log = logging.getLogger("issuer.verify")

KINDS = ("jti", "sid", "sub", "client", "kid")


def parse_entry(raw: Any) -> tuple[str, str, int, int] | None:
    """``(kind, value, at, exp)`` of one wire entry, or None when it is not a valid entry."""
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict):
        return None
    kind, value, at, exp = raw.get("kind"), raw.get("value"), raw.get("at"), raw.get("exp")
    if kind not in KINDS or not isinstance(value, str) or not value:
        return None
    if type(at) is not int or type(exp) is not int:
        return None
    return kind, value, at, exp


class _Tables:
    """The entries by kind. ``jti``/``sid``/``kid`` map value -> exp; ``sub``/``client`` map
    value -> (latest at, exp)."""

    __slots__ = ("client", "jti", "kid", "sid", "sub")

    def __init__(self) -> None:
        self.jti: dict[str, int] = {}
        self.sid: dict[str, int] = {}
        self.kid: dict[str, int] = {}
        self.sub: dict[str, tuple[int, int]] = {}
        self.client: dict[str, tuple[int, int]] = {}


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
        if claims.get("jti") in t.jti or claims.get("sid") in t.sid or kid in t.kid:
            return "revoked"
        if t.sub:
            hit = t.sub.get(claims.get("sub"))  # type: ignore[arg-type]
            if hit is not None and claims.get("iat", 0) <= hit[0]:
                return "revoked"
        if t.client:
            hit = t.client.get(claims.get("client_id"))  # type: ignore[arg-type]
            if hit is not None and claims.get("iat", 0) <= hit[0]:
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
                kind, value, at, exp = entry
                if exp < now:
                    continue
                if kind in ("sub", "client"):
                    table: dict[str, tuple[int, int]] = getattr(t, kind)
                    old = table.get(value)
                    if old is None or at > old[0] or exp > old[1]:
                        table[value] = (max(at, old[0]) if old else at, max(exp, old[1]) if old else exp)
                        changed += 1
                else:
                    simple: dict[str, int] = getattr(t, kind)
                    if simple.get(value, -1) < exp:
                        simple[value] = exp
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
            t = self._t
            fresh.jti = {k: v for k, v in t.jti.items() if v >= now}
            fresh.sid = {k: v for k, v in t.sid.items() if v >= now}
            fresh.kid = {k: v for k, v in t.kid.items() if v >= now}
            fresh.sub = {k: v for k, v in t.sub.items() if v[1] >= now}
            fresh.client = {k: v for k, v in t.client.items() if v[1] >= now}
            self._t = fresh

    def confirm(self) -> None:
        """The feed has just proved the copy current."""
        if self.max_staleness is not None:
            self._fresh_until = self._clock() + self.max_staleness
        self._ready.set()

    def __len__(self) -> int:
        t = self._t
        return len(t.jti) + len(t.sid) + len(t.kid) + len(t.sub) + len(t.client)

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


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisDenylist(_ThreadedFeed):
    """The copy fed from the issuer's Redis: full load at every (re)subscription, then pub/sub."""

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
        super().__init__(max_staleness=max_staleness, fail_open=fail_open, clock=clock)
        self.url = url
        self.prefix = prefix
        self.channel = f"{prefix}denylist"
        self.heartbeat = heartbeat
        self.reconnect_delay = reconnect_delay
        self.client_name = client_name

    def _full_load(self, client: redis.Redis) -> None:
        pattern = _glob_escape(self.prefix) + "deny:*"
        batch: list[bytes] = []
        entry_keys = tuple(f"{self.prefix}deny:{kind}:".encode() for kind in KINDS)
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
        while not self._stop.is_set():
            client = redis_conn.sync_client(
                self.url,
                socket_connect_timeout=max(self.heartbeat, 1.0),
                socket_timeout=max(self.max_staleness or 5.0, 1.0),
                client_name=self.client_name,
            )
            pubsub = client.pubsub()  # type: ignore[no-untyped-call]
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
            if isinstance(decoded, dict) and decoded.get("kind") == "reset":
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
