"""Refreshing a session's access token: single flight per session, in a process and across
instances, so that parallel calls (several tabs, several BFF instances) never present one refresh
token twice and trip the issuer's reuse detection (RFC 9700 4.14.2), which would revoke the family.

- In a process: one :class:`asyncio.Lock` per session; whoever waited re-reads the session after
  the holder stored the new tokens, and finds it fresh.
- Across instances (with Redis): ``SET key token NX PX`` is the lease; the instance that does not
  get it polls the store until the session's ``version`` moves (the winner stored new tokens) or
  the lease is gone (then it tries for the lease itself). The lease is released only by its
  holder (compare-and-delete), and outlives a stuck holder by at most its PX.
- The new tokens are stored by compare-and-set on ``version`` (:meth:`SessionStore.replace`).

A refused refresh (``invalid_grant``: the family was revoked, expired or ended) ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from dataclasses import replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from issuer.bff.metrics import BffMetrics
from issuer.bff.oidc import IssuerClient, IssuerUnavailable, RefreshRejected
from issuer.bff.sessions import Session, Tokens
from issuer.bff.store import SessionStore

__all__ = ["Refresher"]

log = logging.getLogger("issuer.bff")

POLL = 0.05
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Refresher:
    def __init__(
        self,
        store: SessionStore,
        client: IssuerClient,
        metrics: BffMetrics,
        *,
        leeway: int,
        lease_ms: int,
        redis: aioredis.Redis | None = None,
        prefix: str = "bff:",
    ) -> None:
        self.store = store
        self.client = client
        self.metrics = metrics
        self.leeway = leeway
        self.lease_ms = lease_ms
        self.redis = redis
        self.prefix = prefix
        self._locks: weakref.WeakValueDictionary[bytes, asyncio.Lock] = weakref.WeakValueDictionary()

    def _due(self, session: Session) -> bool:
        return session.tokens.refresh_due(int(time.time()), self.leeway)

    async def fresh(self, session: Session) -> Session | None:
        """``session`` with an access token that is not about to expire; None when the session
        has ended (refresh refused, or expired without a refresh token). Raises
        :class:`IssuerUnavailable` when the issuer cannot be asked now."""
        if not self._due(session):
            return session
        lock = self._locks.get(session.digest)
        if lock is None:
            lock = self._locks[session.digest] = asyncio.Lock()
        async with lock:
            current = await self.store.get(session.digest)
            if current is None or not self._due(current):
                return current  # ended, or refreshed while this call waited
            if self.redis is None:
                return await self._refresh(current)
            return await self._across_instances(current)

    async def _across_instances(self, current: Session) -> Session | None:
        assert self.redis is not None
        key = f"{self.prefix}refresh:{current.digest.hex()}"
        deadline = time.monotonic() + self.lease_ms / 1000 + 5
        while time.monotonic() < deadline:
            token = secrets.token_hex(16)
            try:
                leased = await self.redis.set(key, token, nx=True, px=self.lease_ms)
            except RedisError as error:
                log.warning("bff refresh lease: redis unavailable", extra={"error": type(error).__name__})
                return await self._refresh(current)  # one instance's lock still holds
            if leased:
                try:
                    latest = await self.store.get(current.digest)  # a winner may have just finished
                    if latest is None or not self._due(latest):
                        return latest
                    return await self._refresh(latest)
                finally:
                    try:
                        await self.redis.eval(_RELEASE, 1, key, token)
                    except RedisError:
                        pass  # it expires by itself
            # Another instance refreshes: wait for its new tokens, or for its lease to go.
            while time.monotonic() < deadline:
                await asyncio.sleep(POLL)
                latest = await self.store.get(current.digest)
                if latest is None or latest.version != current.version:
                    return latest
                try:
                    if not await self.redis.exists(key):
                        break
                except RedisError:
                    break
        raise IssuerUnavailable("the session's refresh did not finish in time")

    async def _refresh(self, current: Session) -> Session | None:
        tokens = current.tokens
        if tokens.refresh_token is None:
            if int(time.time()) < tokens.expires_at:
                return current
            await self.store.delete(current.digest)
            self.metrics.ended("expired")
            return None
        try:
            answer = await self.client.refresh(tokens.refresh_token)
        except RefreshRejected:
            log.info("bff session ended: refresh refused", extra={"subject": current.subject})
            self.metrics.refreshes.labels("refused").inc()
            await self.store.delete(current.digest)
            self.metrics.ended("refresh_refused")
            return None
        except IssuerUnavailable:
            self.metrics.refreshes.labels("unavailable").inc()
            raise
        self.metrics.refreshes.labels("ok").inc()
        now = int(time.time())
        renewed = replace(
            current,
            tokens=Tokens(
                access_token=answer.access_token,
                expires_at=answer.expires_at,
                refresh_token=answer.refresh_token or tokens.refresh_token,
                id_token=answer.id_token or tokens.id_token,
                obtained_at=now,
            ),
            version=current.version + 1,
        )
        if not await self.store.replace(renewed, expected_version=current.version):
            # Another writer (an instance without the shared lease) stored first: take theirs.
            return await self.store.get(current.digest)
        return renewed
