"""Rate limits on the token endpoint: per client, and per username and address for the password grant.

A sliding window (a log of the allowed attempts of the last ``ISSUER_RATE_LIMIT_WINDOW``
seconds, not fixed buckets): an attempt is allowed when fewer than the limit were allowed in
the window that ends now. Refused attempts are not recorded, so a client that backs off for
``Retry-After`` seconds gets in again. The password limit is checked before the argon2 hash
(that is its point: a credential-stuffing run is refused for the price of one Redis command).

Where the counters live:

* **Redis** (with ``ISSUER_REDIS_URL``): one sorted set per limited key, scored by Redis's own
  clock (``TIME``: every instance agrees), with a ``PEXPIRE`` of one window, so idle keys vanish
  by themselves. Keys: ``P rl:{CLIENT_ID}:client`` and ``P rl:{CLIENT_ID}:pw:H`` (``H`` =
  SHA-256 of username and address, truncated: no username is stored in Redis), one hash tag so
  that both keys of a request sit in one Redis Cluster slot. Each check is one ``EVALSHA``
  (:data:`_SLIDING_WINDOW`): prune, count, and record in all keys or none, atomically.
* **In process** (no Redis): the same log per key in a dict of deques; keys idle for a window
  are swept on the next check after a window has passed.

Redis unreachable: :class:`~issuer.errors.TemporarilyUnavailable` (503); a limit is never
skipped silently. A refusal is :class:`~issuer.errors.RateLimited` (429 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from issuer.errors import RateLimited, TemporarilyUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from issuer.settings import Settings

__all__ = ["LocalWindow", "RateLimits", "RedisWindow", "redis_client"]

# KEYS: the limited keys; ARGV[1]: window in ms; ARGV[2]: a unique member; ARGV[3..]: each key's
# limit. Returns {0, 0} when allowed (recorded in every key), else {index of the first key over
# its limit (1-based), ms until it admits one more}.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 2])
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
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, window)
end
return {0, 0}
"""


class LocalWindow:
    """The sliding-window log in this process (the embedded default, no Redis)."""

    def __init__(self, window: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = float(window)
        self.clock = clock
        self.logs: dict[str, deque[float]] = {}
        self._swept_at = clock()

    async def hit(self, keys: list[tuple[str, int]]) -> tuple[int, float]:
        """Record one attempt in every key, or none: ``(0, 0)`` or ``(index, seconds to wait)``."""
        now = self.clock()
        if now - self._swept_at >= self.window:
            self._sweep(now)
        horizon = now - self.window
        for index, (key, limit) in enumerate(keys, 1):
            log = self.logs.get(key)
            if log is None:
                continue
            while log and log[0] <= horizon:
                log.popleft()
            if len(log) >= limit:
                return index, log[len(log) - limit] + self.window - now
        for key, _ in keys:
            self.logs.setdefault(key, deque()).append(now)
        return 0, 0.0

    def _sweep(self, now: float) -> None:
        horizon = now - self.window
        for key in [key for key, log in self.logs.items() if not log or log[-1] <= horizon]:
            del self.logs[key]
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

    async def hit(self, keys: list[tuple[str, int]]) -> tuple[int, float]:
        member = self._origin + str(next(self._members))
        try:
            index, wait_ms = await self.script(
                keys=[key for key, _ in keys], args=[self.window_ms, member, *[limit for _, limit in keys]]
            )
        except self.errors as error:
            self.failures += 1
            raise TemporarilyUnavailable(detail=f"redis: {type(error).__name__}") from error
        return int(index), int(wait_ms) / 1000.0

    async def close(self) -> None:
        await self.redis.aclose()


class RateLimits:
    """The token endpoint's limits, from settings; :meth:`check` raises :class:`RateLimited`."""

    def __init__(
        self,
        *,
        client_limit: int,
        password_limit: int,
        window: int,
        redis_url: str | None = None,
        prefix: str = "issuer:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_limit = client_limit
        self.password_limit = password_limit
        self.window = window
        self.prefix = prefix
        self.enabled = window > 0 and (client_limit > 0 or password_limit > 0)
        self.backend: LocalWindow | RedisWindow = (
            RedisWindow(redis_client(redis_url), window)
            if redis_url and self.enabled
            else LocalWindow(window, clock)
        )
        self.refused: dict[str, int] = {"client": 0, "password": 0}  # a metric

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            client_limit=settings.rate_limit_client,
            password_limit=settings.rate_limit_password,
            window=settings.rate_limit_window,
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
        )

    def keys(
        self, client_id: str, grant_type: str, username: str | None, address: str | None
    ) -> list[tuple[str, str, int]]:
        """``(limit name, key, limit)`` for one token request."""
        keys = []
        if self.client_limit > 0:
            keys.append(("client", f"{self.prefix}rl:{{{client_id}}}:client", self.client_limit))
        if self.password_limit > 0 and grant_type == "password" and username:
            # One user however spelled (NFKC, case), as the user directory's lookup and more.
            name = unicodedata.normalize("NFKC", username).strip().casefold()
            who = hashlib.sha256(f"{name}\x00{address or ''}".encode()).hexdigest()[:32]
            keys.append(("password", f"{self.prefix}rl:{{{client_id}}}:pw:{who}", self.password_limit))
        return keys

    async def check(self, client_id: str, grant_type: str, username: str | None, address: str | None) -> None:
        """Count one attempt, or raise :class:`RateLimited` (nothing counted) when a limit is reached."""
        if not self.enabled:
            return
        keys = self.keys(client_id, grant_type, username, address)
        if not keys:
            return
        index, wait = await self.backend.hit([(key, limit) for _, key, limit in keys])
        if index:
            name = keys[index - 1][0]
            self.refused[name] += 1
            retry_after = max(1, math.ceil(wait))
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
