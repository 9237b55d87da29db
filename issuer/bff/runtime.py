"""What one BFF app holds while it runs: settings, the HTTP clients (httpx for the issuer, aiohttp
for the upstreams), the session store, the issuer client and the refresher. Made by
:func:`issuer.bff.app.create_app` (or the plugin), started and closed by the app's lifespan;
nothing happens at import time."""

from __future__ import annotations

import hmac
import logging
import time
from http.cookiejar import CookieJar, CookiePolicy
from typing import Any

import aiohttp
import httpx
import jwt
import redis.asyncio as aioredis

from issuer.bff.invalidation import Invalidations
from issuer.bff.metrics import BffMetrics
from issuer.bff.oidc import IssuerClient
from issuer.bff.refresh import Refresher
from issuer.bff.sessions import Sealer, Session, digest, load_session_key
from issuer.bff.settings import BffSettings
from issuer.bff.store import CachedSessions, DatabaseSessions, MemoryCached, SessionStore
from issuer.store.database import Database
from issuer_verify import Denylist, FeedDenylist, RedisDenylist

__all__ = ["SESSION_COOKIE", "BffRuntime"]

log = logging.getLogger("issuer.bff")

SESSION_COOKIE = "__Host-bff-session"
LOGIN_COOKIE = "__Host-bff-login"
MAX_COOKIE = 128  # a session id is 43 characters; anything longer is not one of ours
TOUCH_EVERY = 60  # seconds: the idle expiry is written at most this often per session
PURGE_EVERY = 300  # seconds: ended sessions are deleted from the database at most this often
SHARED_CACHE_TTL = 5.0  # seconds: with Redis, the backstop of the invalidations (issuer.bff.invalidation)


class _NoCookies(CookiePolicy):
    """A cookie policy that accepts and returns nothing."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


class BffRuntime:
    def __init__(self, settings: BffSettings) -> None:
        self.settings = settings
        self.sealer = Sealer(load_session_key(settings))
        timeout = httpx.Timeout(settings.http_timeout)
        # No cookie jar: a shared client would keep an upstream's Set-Cookie and send it for every
        # session (one user's cookie in another's requests).
        self.http = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200),
            trust_env=False,
            cookies=CookieJar(policy=_NoCookies()),
        )
        self.issuer = IssuerClient(settings, self.http)
        self._proxy_http: aiohttp.ClientSession | None = None  # made in start(): it needs the loop
        self.database = Database(settings.database_url)
        self.durable = durable = DatabaseSessions(self.database, self.sealer)
        self._purged_at = 0.0
        self.redis: aioredis.Redis | None = None
        self.invalidations: Invalidations | None = None
        self.store: SessionStore = durable  # PostgreSQL without Redis: several instances may share it
        if settings.database_url.startswith("sqlite:///"):
            self.store = MemoryCached(durable)  # one process on its file: the cache sees every write
        if settings.redis_url:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            from issuer import redis_conn

            # Fail fast, as the issuer's clients do: redis-py's default (ten retries with
            # exponential backoff) would hold every request of a Redis outage for seconds before
            # the store falls back to the database.
            self.redis = redis_conn.async_client(
                settings.redis_url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 1)
            )
            # The store closes this client (the refresher's leases and the invalidations share it).
            shared = CachedSessions(durable, self.redis, settings.redis_prefix, settings.session_idle_ttl)
            self.invalidations = Invalidations(self.redis, settings.redis_url, settings.redis_prefix)
            self.store = MemoryCached(shared, ttl=SHARED_CACHE_TTL, invalidations=self.invalidations)
        self.denylist: Denylist | None = None
        if settings.denylist_feed:
            self.denylist = FeedDenylist(
                settings.issuer_url,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                poll_interval=1.0,
                fail_open=True,
                timeout=float(settings.http_timeout),
            )
        elif settings.denylist_redis_url:
            self.denylist = RedisDenylist(
                settings.denylist_redis_url, prefix=settings.denylist_redis_prefix, fail_open=True
            )
        self.metrics = BffMetrics()
        self.refresher = Refresher(
            self.store,
            self.issuer,
            self.metrics,
            leeway=settings.refresh_leeway,
            lease_ms=(settings.http_timeout + 5) * 1000,
            redis=self.redis,
            prefix=settings.redis_prefix,
        )

    @property
    def proxy_http(self) -> aiohttp.ClientSession:
        """The upstreams' client (:mod:`issuer.bff.proxy`): no cookie jar (as above), no redirects
        followed (per request), no body decoding (the answer's bytes are relayed), no fields of
        its own (the browser's are sent), a keep-alive pool of 200 connections kept 5 s idle,
        ``BFF_HTTP_TIMEOUT`` to connect (a place in the pool included) and for each read."""
        if self._proxy_http is None:
            raise RuntimeError("the BFF runtime is not started")
        return self._proxy_http

    async def start(self) -> None:
        seconds = float(self.settings.http_timeout)
        self._proxy_http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=5),
            timeout=aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            trust_env=False,
        )
        await self.store.start()
        if self.denylist is not None:
            self.denylist.start()

    async def close(self) -> None:
        if self.denylist is not None:
            self.denylist.close()
        await self.store.close()
        await self.http.aclose()
        if self._proxy_http is not None:
            await self._proxy_http.close()

    async def purge(self) -> None:
        """Delete the sessions that ended unused (at most every :data:`PURGE_EVERY` seconds per
        process; called when a session starts). Their refresh tokens are left to expire at the
        issuer (its idle and absolute lifetimes)."""
        now = time.monotonic()
        if now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now
        removed = await self.durable.purge(int(time.time()), self.settings.session_idle_ttl)
        if removed:
            self.metrics.sessions_ended.labels("expired").inc(removed)

    def revoked(self, session: Session) -> bool:
        """Does the issuer's denylist (when followed) revoke the session's access token: its
        ``sid`` (the refresh family), its user or client since it was issued, or its key? A
        stale copy revokes nothing here (the upstream's verifier and the issuer's refresh check
        still do): the BFF's check only ends sessions sooner."""
        if self.denylist is None:
            return False
        token = session.tokens.access_token
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        if self.denylist.check(kid if isinstance(kid, str) else "", claims) == "revoked":
            log.info("bff session ended: revoked at the issuer", extra={"subject": session.subject})
            return True
        return False

    async def session(self, cookies: Any) -> Session | None:
        """The live session named by the request's session cookie, or None. An ended session
        (idle or absolute expiry) is deleted; a used one has its idle expiry moved on."""
        value = cookies.get(SESSION_COOKIE)
        if not value or len(value) > MAX_COOKIE:
            return None
        key = digest(value)
        session = await self.store.get(key)
        if session is None or not hmac.compare_digest(session.digest, key):
            return None
        now = int(time.time())
        if now >= session.ends_at(self.settings.session_idle_ttl):
            await self.store.delete(key)
            self.metrics.ended("expired")
            return None
        if self.revoked(session):
            await self.store.delete(key)
            self.metrics.ended("revoked")
            return None
        if now - session.last_seen_at >= min(TOUCH_EVERY, self.settings.session_idle_ttl // 10):
            await self.store.touch(key, now)
        return session
