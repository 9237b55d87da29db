"""Invalidations of cached sessions across BFF instances, over Redis pub/sub.

With Redis every instance keeps the sessions it read recently in process
(:class:`issuer.bff.store.MemoryCached`), so that a proxied request waits for no Redis ``GET``.
That copy stays exact across instances through the channel ``BFF_REDIS_PREFIX + "invalidate"``:

- every write that changes or ends a session (a refresh's replace, the idle expiry moved on, a
  logout, a revocation or expiry dropping it) publishes the session's digest (32 bytes) after the
  store wrote it; every instance, the writer included, subscribes and evicts that digest;
- fail closed: the copy is used only while the subscription is known to be alive. It is cleared
  and bypassed from start until the first subscription is confirmed, whenever the connection
  fails (an outage, a reset, a failover), and whenever nothing (not even the answer to the
  heartbeat ``PING`` sent every ``heartbeat`` seconds) has been heard for ``3 * heartbeat``
  seconds (a connection that went silent without breaking). A new subscription starts from an
  empty copy, so a message published while no subscription listened can never be missed;
- a read that an invalidation (or a lost subscription) overtook while it was under way does not
  fill the copy (the cache's generation counter moved).

What stays: a message is in every subscriber's socket before the writer's ``PUBLISH`` returns,
and the subscriber evicts it when its event loop next reads that socket; a request that an
instance started before then is answered as it would have been a moment earlier. The entries'
short TTL is the backstop for a writer that could not publish (its Redis writes failed too, so
the other instances' Redis reads were stale as well).

redis-py 8.1's asyncio client has no server-assisted client-side caching (``CLIENT TRACKING``:
its ``cache_config`` exists only on the blocking client), and the BFF's writes are few and all go
through one store, so an explicit channel is the simpler exact design here; it works on the three
topologies of :mod:`issuer.redis_conn` alike (a Cluster relays a classic ``PUBLISH`` to every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["Invalidations", "channel"]

log = logging.getLogger("issuer.bff")

DIGEST_BYTES = 32


def channel(prefix: str) -> str:
    return f"{prefix}invalidate"


def _nothing(*_: Any) -> None:
    pass


class Invalidations:
    """The channel: :meth:`publish` (through the store's client) and a subscriber task that calls
    ``on_evict(digest)`` per message and ``on_reset()`` when the subscription starts or ends."""

    def __init__(
        self,
        publisher: aioredis.Redis,
        url: str,
        prefix: str,
        *,
        heartbeat: float = 1.0,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.publisher = publisher
        self.url = url
        self.channel = channel(prefix)
        self.heartbeat = heartbeat
        self.max_silence = 3 * heartbeat
        self.reconnect_delay = reconnect_delay
        self.on_evict: Callable[[bytes], None] = _nothing
        self.on_reset: Callable[[], None] = _nothing
        self._up = False
        self._heard = 0.0
        self._task: asyncio.Task[None] | None = None
        self.received = 0  # invalidations handled (tests, metrics)
        self.subscriptions = 0  # subscriptions confirmed

    @property
    def live(self) -> bool:
        """Is the subscription confirmed and heard from recently (the local copy may answer)?"""
        return self._up and time.monotonic() - self._heard < self.max_silence

    async def publish(self, session_digest: bytes) -> None:
        try:
            await self.publisher.publish(self.channel, session_digest)
        except (RedisError, OSError) as error:
            log.warning(
                "bff session cache: invalidation not published", extra={"error": type(error).__name__}
            )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._down()

    def _down(self) -> None:
        if self._up:
            self._up = False
            log.warning("bff session cache: invalidation channel lost; reading the store directly")
        self.on_reset()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "subscribe":  # confirmed: whatever was published before is not in the copy
            self.on_reset()
            self._heard = time.monotonic()
            self._up = True
            self.subscriptions += 1
        elif kind == "pong":
            self._heard = time.monotonic()
        elif kind == "message":
            self._heard = time.monotonic()
            data = message["data"]
            if isinstance(data, bytes) and len(data) == DIGEST_BYTES:
                self.on_evict(data)
                self.received += 1
            else:
                self.on_reset()  # not ours, or malformed: forget everything rather than guess

    async def _run(self) -> None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from issuer import redis_conn

        delay = self.reconnect_delay
        while True:
            # No retry inside redis-py: a lost connection must reach this loop (and close the
            # copy) before anything reconnects and resubscribes.
            client = redis_conn.async_client(
                self.url,
                socket_connect_timeout=1,
                socket_timeout=self.max_silence,
                retry=Retry(NoBackoff(), 0),
                client_name="issuer-bff-invalidations",
            )
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                pinged = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=self.heartbeat / 4)
                    if message is not None:
                        self._handle(message)
                        delay = self.reconnect_delay
                    now = time.monotonic()
                    if self._up and now - self._heard >= self.max_silence:
                        raise TimeoutError("the invalidation channel went silent")
                    if now - pinged >= self.heartbeat:
                        await pubsub.ping()
                        pinged = now
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as error:
                log.warning(
                    "bff session cache: invalidation channel unavailable; retrying",
                    extra={"error": type(error).__name__},
                )
            except Exception:
                log.exception("bff session cache: invalidation channel failed")
            finally:
                self._down()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
