"""Rate limits on the token endpoint and on every password check (credential stuffing).

The limits, all checked before any work they protect (the argon2 hash above all):

* **per client**, all grants together (``ISSUER_RATE_LIMIT_CLIENT``);
* **per username and client address** (``ISSUER_RATE_LIMIT_PASSWORD``): one user guessed at;
* **per client address across usernames and clients** (``ISSUER_RATE_LIMIT_PASSWORD_ADDRESS``):
  one address trying a new username each time (credential stuffing). IPv6 addresses count by
  their /64 network (one host is usually given a whole /64 to rotate through);
* **globally**, for every address and instance together (``ISSUER_RATE_LIMIT_PASSWORD_GLOBAL``
  attempts per second): a stuffing run spread over many addresses is shed with 503 before it
  reaches argon2, instead of queueing every login behind it.

:meth:`RateLimits.password_attempt` is the one gate in front of every password check: the token
endpoint's :meth:`RateLimits.check` includes its keys for the password grant (one round trip
with the per-client key), and the login page (a later issue) must call it before
:meth:`issuer.users.UserDirectory.authenticate`. Each process also bounds the password checks
waiting for a hashing slot (:class:`issuer.users.Passwords`, ``ISSUER_PASSWORD_HASH_QUEUE``).

Each limit is a sliding window (a log of the allowed attempts of the last window, not fixed
buckets): ``ISSUER_RATE_LIMIT_WINDOW`` seconds, one second for the global one. An attempt is
allowed when fewer than the limit were allowed in the window that ends now, and then it is
recorded in every key of the request, or, when any key is full, in none: refused attempts are not
recorded, so a client that backs off for ``Retry-After`` seconds gets in again, and an attempt
refused per address uses none of the global budget.

Where the counters live:

* **Redis** (with ``ISSUER_REDIS_URL``): one sorted set per limited key, scored by Redis's own
  clock (``TIME``: every instance agrees), with a ``PEXPIRE`` of its window, so idle keys vanish
  by themselves. Keys: ``P rl:{CLIENT_ID}:client``, ``P rl:{CLIENT_ID}:pw:H`` (``H`` = SHA-256 of
  username and address, truncated: no username is stored in Redis), ``P rl:pw-address:A`` (``A``
  = SHA-256 of the address or /64) and ``P rl:pw-global``. Each check is one ``EVALSHA``
  (:data:`_SLIDING_WINDOW`): prune, count, and record in all keys or none, atomically. On a
  Cluster the prefix must hold a hash tag (settings refuse one without), so every key above hashes
  to the prefix's slot and one script may touch them all; on one server or Sentinel slots do not
  matter (the ``{CLIENT_ID}`` tags date from before that rule).
* **In process** (no Redis): the same log per key in a dict of deques; keys idle for their window
  are swept on the next check after a window has passed.

Redis unreachable: :class:`~issuer.errors.TemporarilyUnavailable` (503); a limit is never
skipped silently. A refusal is :class:`~issuer.errors.RateLimited` (429 with ``Retry-After``),
or :class:`~issuer.errors.Overloaded` (503 with ``Retry-After``) for the global ceiling.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import math
import os
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from issuer.errors import Overloaded, RateLimited, TemporarilyUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from issuer.settings import Settings

__all__ = ["LocalWindow", "RateLimits", "RedisWindow", "address_bucket", "redis_client"]

# KEYS: the limited keys; ARGV[1]: a unique member; ARGV[2i], ARGV[2i + 1]: key i's limit and its
# window in ms. Returns {0, 0} when allowed (recorded in every key), else {index of the first key
# over its limit (1-based), ms until it admits one more}.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + window - now
    if wait < 1 then wait = 1 end
    return {i, wait}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return {0, 0}
"""

GLOBAL_WINDOW = 1  # seconds: the global ceiling is a budget per second


def address_bucket(address: str | None) -> str:
    """What the per-address limit counts by: the address, or its /64 for IPv6 (not IPv4-mapped)."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LocalWindow:
    """The sliding-window log in this process (the embedded default, no Redis)."""

    def __init__(self, window: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = float(window)
        self.clock = clock
        self.logs: dict[str, deque[float]] = {}
        self.spans: dict[str, float] = {}  # each key's window, when not the default one
        self._swept_at = clock()

    async def hit(self, keys: list[tuple[str, int]], windows: list[float] | None = None) -> tuple[int, float]:
        """Record one attempt in every key, or none: ``(0, 0)`` or ``(index, seconds to wait)``.

        ``windows``: each key's window in seconds (default: this limiter's ``window``)."""
        spans = windows or [self.window] * len(keys)
        now = self.clock()
        if now - self._swept_at >= self.window:
            self._sweep(now)
        for index, ((key, limit), span) in enumerate(zip(keys, spans, strict=True), 1):
            log = self.logs.get(key)
            if log is None:
                continue
            horizon = now - span
            while log and log[0] <= horizon:
                log.popleft()
            if len(log) >= limit:
                return index, log[len(log) - limit] + span - now
        for (key, _), span in zip(keys, spans, strict=True):
            self.logs.setdefault(key, deque()).append(now)
            if span != self.window:
                self.spans[key] = span
        return 0, 0.0

    def _span(self, key: str) -> float:
        return self.spans.get(key, self.window)

    def _sweep(self, now: float) -> None:
        idle = [key for key, log in self.logs.items() if not log or log[-1] <= now - self._span(key)]
        for key in idle:
            del self.logs[key]
            self.spans.pop(key, None)
        self._swept_at = now


def redis_client(url: str) -> aioredis.Redis:
    """A client that fails fast (a check that cannot reach Redis is a 503 now), as the denylist's;
    any topology :mod:`issuer.redis_conn` knows (one server, Sentinel, Cluster)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from issuer import redis_conn

    return redis_conn.async_client(
        url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 1), decode_responses=True
    )


class RedisWindow:
    """The sliding-window log in Redis: one script, one round trip per check."""

    def __init__(self, client: aioredis.Redis, window: int) -> None:
        from redis.exceptions import RedisError

        self.redis = client
        self.window_ms = window * 1000
        self.script: Any = client.register_script(_SLIDING_WINDOW)
        self.errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self.failures = 0  # Redis errors met by checks (a metric)
        self._members = itertools.count()
        self._origin = f"{os.getpid()}.{os.urandom(4).hex()}."

    async def hit(self, keys: list[tuple[str, int]], windows: list[float] | None = None) -> tuple[int, float]:
        member = self._origin + str(next(self._members))
        spans = [round(w * 1000) for w in windows] if windows else [self.window_ms] * len(keys)
        args: list[int | str] = [member]
        for (_, limit), span in zip(keys, spans, strict=True):
            args += [limit, span]
        try:
            index, wait_ms = await self.script(keys=[key for key, _ in keys], args=args)
        except self.errors as error:
            self.failures += 1
            raise TemporarilyUnavailable(detail=f"redis: {type(error).__name__}") from error
        return int(index), int(wait_ms) / 1000.0

    async def close(self) -> None:
        await self.redis.aclose()


class RateLimits:
    """The limits, from settings: :meth:`check` (a token request) and :meth:`password_attempt`
    (any other password check) raise :class:`RateLimited` or :class:`Overloaded`."""

    NAMES = ("client", "password", "address", "global")

    def __init__(
        self,
        *,
        client_limit: int,
        password_limit: int,
        window: int,
        address_limit: int = 0,
        global_limit: int = 0,
        redis_url: str | None = None,
        prefix: str = "issuer:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        # A window of 0 turns the windowed limits off; the global one has its own window.
        self.client_limit = client_limit if window > 0 else 0
        self.password_limit = password_limit if window > 0 else 0
        self.address_limit = address_limit if window > 0 else 0
        self.global_limit = global_limit
        self.prefix = prefix
        self.enabled = any((self.client_limit, self.password_limit, self.address_limit, self.global_limit))
        self.backend: LocalWindow | RedisWindow = (
            RedisWindow(redis_client(redis_url), window)
            if redis_url and self.enabled
            else LocalWindow(window, clock)
        )
        self.refused: dict[str, int] = dict.fromkeys(self.NAMES, 0)  # a metric

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            client_limit=settings.rate_limit_client,
            password_limit=settings.rate_limit_password,
            address_limit=settings.rate_limit_password_address,
            global_limit=settings.rate_limit_password_global,
            window=settings.rate_limit_window,
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
        )

    def keys(
        self, client_id: str, grant_type: str, username: str | None, address: str | None
    ) -> list[tuple[str, str, int, float]]:
        """``(limit name, key, limit, window in seconds)`` for one token request."""
        keys: list[tuple[str, str, int, float]] = []
        if self.client_limit > 0:
            keys.append(("client", f"{self.prefix}rl:{{{client_id}}}:client", self.client_limit, self.window))
        if grant_type == "password" and username:
            keys += self.password_keys(client_id, username, address)
        return keys

    def password_keys(
        self, client_id: str, username: str, address: str | None
    ) -> list[tuple[str, str, int, float]]:
        """The keys of one password attempt, cheapest refusal first, the global budget last (so an
        attempt refused per address or per user spends none of it)."""
        keys: list[tuple[str, str, int, float]] = []
        if self.password_limit > 0:
            # One user however spelled (NFKC, case), as the user directory's lookup and more.
            name = unicodedata.normalize("NFKC", username).strip().casefold()
            who = hashlib.sha256(f"{name}\x00{address or ''}".encode()).hexdigest()[:32]
            key = f"{self.prefix}rl:{{{client_id}}}:pw:{who}"
            keys.append(("password", key, self.password_limit, self.window))
        if self.address_limit > 0:
            where = hashlib.sha256(address_bucket(address).encode()).hexdigest()[:32]
            keys.append(("address", f"{self.prefix}rl:pw-address:{where}", self.address_limit, self.window))
        if self.global_limit > 0:
            keys.append(("global", f"{self.prefix}rl:pw-global", self.global_limit, GLOBAL_WINDOW))
        return keys

    async def check(self, client_id: str, grant_type: str, username: str | None, address: str | None) -> None:
        """Count one token request, or raise (nothing counted) when a limit is reached. For the
        password grant this includes :meth:`password_attempt`'s keys, in the same round trip."""
        if not self.enabled:
            return
        await self._hit(self.keys(client_id, grant_type, username, address))

    async def password_attempt(self, client_id: str, username: str, address: str | None) -> None:
        """The gate in front of a password check: call it before ``UserDirectory.authenticate``
        wherever a password is checked outside the token endpoint (the login page). Per username
        and address, per address across usernames, and the global budget; no per-client key."""
        if not self.enabled:
            return
        await self._hit(self.password_keys(client_id, username, address))

    async def _hit(self, keys: list[tuple[str, str, int, float]]) -> None:
        if not keys:
            return
        index, wait = await self.backend.hit(
            [(key, limit) for _, key, limit, _ in keys], [window for *_, window in keys]
        )
        if not index:
            return
        name = keys[index - 1][0]
        self.refused[name] += 1
        retry_after = max(1, math.ceil(wait))
        if name == "global":
            raise Overloaded(
                f"too many sign-ins right now; retry after {retry_after} s",
                detail="rate limit: global",
                retry_after=retry_after,
            )
        raise RateLimited(
            f"too many token requests; retry after {retry_after} s",
            detail=f"rate limit: {name}",
            retry_after=retry_after,
        )

    @property
    def redis_errors(self) -> int:
        return self.backend.failures if isinstance(self.backend, RedisWindow) else 0

    async def close(self) -> None:
        if isinstance(self.backend, RedisWindow):
            await self.backend.close()
