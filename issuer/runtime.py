"""The issuer's running parts, wired once from :class:`~issuer.settings.Settings`.

Both the HTTP app and the CLI build a :class:`Runtime`; neither constructs stores or key rings of
its own. ``start`` checks the schema (upgrading the embedded SQLite database), loads the key
material and the key ring; ``close`` releases connections and background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from issuer.clients import ClientDirectory
from issuer.clock import wall_clock
from issuer.errors import TemporarilyUnavailable
from issuer.grants import GrantContext
from issuer.keys import announce
from issuer.keys.material import KeyMaterial, load_key_material
from issuer.keys.ring import KeyRing
from issuer.observability.metrics import Metrics
from issuer.ratelimit import RateLimits
from issuer.revocation.denylist import Denylist
from issuer.revocation.service import Revocation
from issuer.settings import Settings, jwks_max_age
from issuer.signin.csrf import CSRF
from issuer.signin.idtoken import IdTokens
from issuer.signin.origins import AllowedOrigins
from issuer.store import migrations
from issuer.store.audit import AuditStore
from issuer.store.database import Database
from issuer.store.refresh import RefreshStore
from issuer.store.signin import CodeStore, ConsentStore, RequestStore, SessionStore
from issuer.tokens import AccessTokenMinter, RefreshTokens
from issuer.users import Passwords, UserDirectory

__all__ = ["Runtime", "SchemaOutOfDate"]

log = logging.getLogger("issuer")

# Seconds between reloads while the database still names a denylisted key active (the
# revocation's second step has not committed yet): doubling from the first to the last.
DENIED_RETRY = (0.1, 5.0)


class SchemaOutOfDate(RuntimeError):
    """The database is not at the migrations' head: run ``issuer db upgrade``."""


class Runtime:
    def __init__(self, settings: Settings, *, material: KeyMaterial | None = None) -> None:
        self.settings = settings
        self.clock = wall_clock()  # time.time; skewed only by a test (issuer.clock)
        self.material = material or load_key_material(settings)
        self.db = Database(
            settings.database_url, pool_size=settings.db_pool_size, retry_after=settings.retry_after
        )
        self.audit = AuditStore()
        self.keyring = KeyRing(self.db, self.material, settings.signing_alg)
        self.clients = ClientDirectory(
            self.db,
            self.material.hmac_key,
            default_audience=settings.default_audience,
            cache_ttl=settings.client_cache_ttl,
        )
        self.passwords = Passwords(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            parallelism=settings.password_hash_parallelism,
            concurrency=settings.password_hash_concurrency,
            queue=settings.password_hash_queue,
        )
        self.users = UserDirectory(self.db, self.passwords)
        self.refresh_store = RefreshStore(self.audit)
        # Browser sign-in (issuer.signin): SSO sessions, one-time codes, consents, forms' CSRF tokens.
        self.browser_sessions = SessionStore()
        self.codes = CodeStore()
        self.consents = ConsentStore()
        self.csrf = CSRF(self.material.hmac_key)
        # CORS: the origins of public clients' redirect URIs (issuer.http.cors)
        self.origins = AllowedOrigins(self.clients, ttl=settings.client_cache_ttl)
        self.authorization_requests = RequestStore()  # pending requests waiting for login/consent
        self.signin_prune_due = 0  # when /authorize next deletes expired requests and codes
        self.login_outcomes: dict[str, int] = dict.fromkeys(("ok", "failed", "rate_limited"), 0)  # a metric
        self.grants = GrantContext(
            settings=settings,
            db=self.db,
            minter=AccessTokenMinter(self.keyring, settings.url, clock=self.clock),
            refresh_tokens=RefreshTokens(self.material.hmac_key),
            refresh_store=self.refresh_store,
            users=self.users,
            codes=self.codes,
            browser_sessions=self.browser_sessions,
            clock=self.clock,
        )
        # Metadata members contributed by optional endpoints (revocation, introspection, ...).
        self.metadata_extra: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.denylist = Denylist(
            self.db,
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
            leeway=settings.denylist_leeway,
            fail_open=settings.denylist_fail_open,
            default_ttl=settings.access_token_ttl,
            audit=self.audit,
            clock=self.clock,
        )
        self.revocation = Revocation(
            issuer=settings.url,
            db=self.db,
            keyring=self.keyring,
            clients=self.clients,
            refresh_store=self.refresh_store,
            refresh_tokens=self.grants.refresh_tokens,
            denylist=self.denylist,
            audit=self.audit,
            clock=self.clock,
            clock_skew=settings.clock_skew,
            browser_sessions=self.browser_sessions,
        )
        # A signing key on the denylist never signs (the minter looks it up before every token)
        # and leaves the JWKS at the next reload, which its appearance triggers at once.
        self.keyring.denied_kids = self.denylist.kids
        self.grants.minter.revoked_kids = self.denylist.kids
        self.id_tokens = IdTokens(self.keyring, settings.url, self.denylist.kids, clock=self.clock)
        self.grants.id_tokens = self.id_tokens
        self.grants.on_code_replayed.append(self.revocation.on_code_replayed)
        self._keys_changed = asyncio.Event()
        self.denylist.on_kid.append(lambda kid: self._keys_changed.set())
        self.grants.ready_checks.append(self.grants.minter.ensure_can_sign)
        self.grants.on_family_revoked.append(self.revocation.on_family_revoked)
        self.grants.session_checks.append(self.revocation.check_session)
        self.grants.ready_checks.append(self.denylist.ensure_available)
        self.metadata_extra.update(self.revocation.metadata(settings.url))
        self.on_close(self.denylist.close)
        self.rate_limits = RateLimits.from_settings(settings)  # /token and every password check
        self.on_close(self.rate_limits.close)
        self.metrics = Metrics(self)  # GET /metrics; a registry of this runtime's own

    @property
    def jwks_max_age(self) -> int:
        """How long verifiers may cache the JWKS (``Cache-Control: max-age``), from the key schedule."""
        return jwks_max_age(self.settings)

    async def check_schema(self, *, upgrade_embedded: bool = True) -> None:
        if upgrade_embedded and self.db.dialect == "sqlite":
            await asyncio.to_thread(migrations.upgrade, self.settings.database_url)
        async with self.db.transaction() as conn:
            current = await migrations.current(conn)
        head = await asyncio.to_thread(migrations.head)  # reads every revision file: not on the loop
        if current != head:
            raise SchemaOutOfDate(
                f"the database schema is at {current or 'nothing'}, the issuer needs {head}: "
                "run `issuer db upgrade`"
            )

    async def start(self, *, serve: bool = True) -> None:
        """Ready the runtime; with ``serve`` also the signing key and background reloads."""
        await self.check_schema()
        if serve:
            await self.keyring.ensure_active()
            self.spawn(self._reload_keys())
            if self.settings.redis_url:
                self.spawn(announce.watch(self.settings, self.keyring))  # reload on `<prefix>keys`
            if self.metrics.multiprocess:  # with several workers (issuer.observability.metrics)
                self.spawn(self.metrics.carry_forever())
        await self.denylist.start(background=serve)  # Redis copy, reconciliation, pruning

    def spawn(self, coroutine: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coroutine))

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def _reload_keys(self) -> None:
        """Reload every ``ISSUER_KEY_RELOAD_INTERVAL``, and at once when the denylist names a kid.

        While the database still calls a denylisted key active, retry soon (backing off): the
        revocation's successor key is about to be committed, and until then nothing signs.
        """
        retry = DENIED_RETRY[0]
        while True:
            wait = retry if self.keyring.active_denied else self.settings.key_reload_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._keys_changed.wait(), wait)
            self._keys_changed.clear()
            try:
                if await self.keyring.reload():
                    log.info(
                        "key ring reloaded", extra={"kids": [kid for kid, _ in self.keyring.fingerprint]}
                    )
            except TemporarilyUnavailable as error:  # an outage: the ring we have goes on signing
                log.warning("key ring reload: database unavailable (%s)", error.detail)
            except Exception:  # keep serving with the ring we have; say so loudly
                log.exception("key ring reload failed")
            if self.keyring.active_denied:
                if retry == DENIED_RETRY[0]:
                    log.error("the active signing key is on the denylist and no successor is active yet")
                retry = min(retry * 2, DENIED_RETRY[1])
            else:
                retry = DENIED_RETRY[0]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for closer in reversed(self._closers):
            await closer()
        await self.db.close()
