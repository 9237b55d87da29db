"""OAuth clients: registration, secrets and authentication (RFC 6749 2.3.1).

Secrets are 256 random bits, shown once, stored as HMAC-SHA-256 under a key kept outside the
database (:mod:`issuer.keys.material`), and compared in constant time. A client holds up to two live
secrets so that it can rotate: ``rotate_secret`` makes a new primary and keeps the previous one
valid until a deadline. Records are cached in-process for ``ISSUER_CLIENT_CACHE_TTL`` seconds,
so authentication costs one HMAC (about 4 us) on the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from issuer.errors import InvalidClient
from issuer.signin.redirects import check_redirect_uri
from issuer.store.clients import ClientStore, StoredClient
from issuer.store.database import Database
from issuer.tokens import derive_key

__all__ = [
    "GRANT_TYPES",
    "ClientDirectory",
    "ClientRecord",
    "NewClient",
    "RedirectsUpdated",
    "check_registration",
]

GRANT_TYPES = ("authorization_code", "client_credentials", "password", "refresh_token")
# A public client (no secret: SPAs, mobile and desktop apps) cannot keep a credential, so it may
# not use the grants that rest on one (RFC 9700 2.4).
PUBLIC_FORBIDDEN_GRANTS = frozenset({"client_credentials", "password"})
CLIENT_ID_PREFIX = "cli_"
SECRET_PREFIX = "ics_"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str
    grant_types: frozenset[str]
    scopes: frozenset[str]
    audience: tuple[str, ...]
    access_token_ttl: int | None
    can_introspect: bool
    disabled: bool
    secret_digest: bytes
    previous_secret_digest: bytes | None
    previous_secret_expires_at: int | None
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    public: bool = False  # token_endpoint_auth_method "none"
    first_party: bool = False  # skips the consent page

    @property
    def auth_method(self) -> str:
        return "none" if self.public else "client_secret_basic"

    @classmethod
    def from_stored(cls, row: StoredClient, default_audience: str) -> ClientRecord:
        return cls(
            client_id=row.client_id,
            name=row.name,
            grant_types=frozenset(row.grant_types.split()),
            scopes=frozenset(row.scope.split()),
            audience=tuple(row.audience.split()) if row.audience else (default_audience,),
            access_token_ttl=row.access_token_ttl,
            can_introspect=bool(row.can_introspect),
            disabled=row.disabled_at is not None,
            secret_digest=bytes(row.secret_digest),
            previous_secret_digest=bytes(row.previous_secret_digest) if row.previous_secret_digest else None,
            previous_secret_expires_at=row.previous_secret_expires_at,
            redirect_uris=tuple(row.redirect_uris.split()),
            post_logout_redirect_uris=tuple(row.post_logout_redirect_uris.split()),
            public=bool(row.public),
            first_party=bool(row.first_party),
        )


@dataclass(frozen=True, slots=True)
class NewClient:
    client_id: str
    client_secret: str | None  # None: a public client


@dataclass(frozen=True, slots=True)
class RedirectsUpdated:
    """A client's sign-in registration after :meth:`ClientDirectory.update_redirects`."""

    client_id: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    first_party: bool
    changed: bool


def check_registration(
    grant_types: list[str], *, public: bool, redirect_uris: list[str], post_logout_redirect_uris: list[str]
) -> tuple[list[str], list[str]]:
    """The registration rules of browser sign-in; returns the URIs as they will be stored.

    Raises ValueError (one line, for the operator) when a grant is unknown, a public client asks
    for a grant that needs a secret, an ``authorization_code`` client has no redirect URI, or a
    URI is not acceptable (:func:`issuer.signin.redirects.check_redirect_uri`)."""
    unknown = sorted(set(grant_types) - set(GRANT_TYPES))
    if unknown:
        raise ValueError(f"unknown grant type {unknown[0]!r} (known: {', '.join(GRANT_TYPES)})")
    if public:
        forbidden = sorted(set(grant_types) & PUBLIC_FORBIDDEN_GRANTS)
        if forbidden:
            raise ValueError(f"a public client may not use the {forbidden[0]} grant (it has no secret)")
        if "authorization_code" not in grant_types:
            raise ValueError("a public client needs the authorization_code grant")
    redirects = [check_redirect_uri(uri) for uri in redirect_uris]
    logouts = [check_redirect_uri(uri) for uri in post_logout_redirect_uris]
    if "authorization_code" in grant_types and not redirects:
        raise ValueError("the authorization_code grant needs at least one --redirect-uri")
    if not redirects and "authorization_code" not in grant_types and logouts:
        raise ValueError("post-logout redirect URIs are for authorization_code clients")
    return list(dict.fromkeys(redirects)), list(dict.fromkeys(logouts))


class ClientDirectory:
    """Looks clients up (with a short cache) and authenticates them."""

    def __init__(
        self,
        db: Database,
        hmac_key: bytes,
        *,
        default_audience: str,
        cache_ttl: int,
        store: ClientStore | None = None,
    ) -> None:
        self.db = db
        self.store = store or ClientStore()
        self.default_audience = default_audience
        self.cache_ttl = cache_ttl
        self._key = derive_key(hmac_key, "client-secret/v1")
        self._cache: dict[str, tuple[float, ClientRecord | None]] = {}
        # Bumped by every change made through this directory: caches built on the client table
        # (the CORS origins, issuer.signin.origins) rebuild at once in this process.
        self.changes = 0
        self._dummy = self.digest("not a secret")

    def digest(self, secret: str) -> bytes:
        return hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    async def get(self, client_id: str) -> ClientRecord | None:
        now = time.monotonic()
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.db.transaction() as conn:
            row = await self.store.get(conn, client_id)
        record = ClientRecord.from_stored(row, self.default_audience) if row is not None else None
        if self.cache_ttl:
            if len(self._cache) > 10_000:
                self._cache.clear()  # bounded: unknown ids cannot grow it without limit
            self._cache[client_id] = (now + self.cache_ttl, record)
        return record

    def invalidate(self, client_id: str | None = None) -> None:
        self.changes += 1
        if client_id is None:
            self._cache.clear()
        else:
            self._cache.pop(client_id, None)

    async def authenticate(self, client_id: str, secret: str, *, basic: bool) -> ClientRecord:
        """Constant-time check of ``secret`` against the client's live secrets."""
        record = await self.get(client_id) if len(client_id) <= 64 else None
        presented = self.digest(secret)
        if record is None:
            hmac.compare_digest(presented, self._dummy)  # same work as a known client
            raise InvalidClient(basic=basic, detail="unknown client")
        ok = hmac.compare_digest(presented, record.secret_digest)
        if record.previous_secret_digest is not None:
            previous_live = (record.previous_secret_expires_at or 0) > int(time.time())
            ok |= hmac.compare_digest(presented, record.previous_secret_digest) and previous_live
        if not ok:
            raise InvalidClient(basic=basic, detail="wrong secret")
        if record.public:
            # A public client has no secret: one presented is not its own (and not accepted).
            raise InvalidClient(basic=basic, detail="public client presented a secret")
        if record.disabled:
            raise InvalidClient(basic=basic, detail="disabled client")
        return record

    async def identify_public(self, client_id: str) -> ClientRecord:
        """RFC 6749 2.1 / token_endpoint_auth_method ``none``: a public client names itself.

        Only a public client may; a confidential client that sends no secret is
        ``invalid_client``, as is an unknown or disabled one."""
        record = await self.get(client_id) if len(client_id) <= 64 else None
        if record is None:
            raise InvalidClient(basic=False, detail="unknown client")
        if not record.public:
            raise InvalidClient(basic=False, detail="client authentication required")
        if record.disabled:
            raise InvalidClient(basic=False, detail="disabled client")
        return record

    async def create(
        self,
        *,
        name: str,
        grant_types: list[str],
        scopes: list[str],
        audience: list[str] | None = None,
        access_token_ttl: int | None = None,
        can_introspect: bool = False,
        redirect_uris: list[str] | None = None,
        post_logout_redirect_uris: list[str] | None = None,
        public: bool = False,
        first_party: bool = False,
    ) -> NewClient:
        """Register a client; ValueError (:func:`check_registration`) when the registration is not
        acceptable. A public client gets no secret; its secret digest is that of a random value
        nobody knows, so that no code path can ever match it."""
        redirects, logouts = check_registration(
            grant_types,
            public=public,
            redirect_uris=redirect_uris or [],
            post_logout_redirect_uris=post_logout_redirect_uris or [],
        )
        client_id = CLIENT_ID_PREFIX + secrets.token_urlsafe(16)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)  # 256 bits
        now = int(time.time())
        async with self.db.transaction() as conn:
            await self.store.create(
                conn,
                client_id=client_id,
                name=name,
                grant_types=" ".join(grant_types),
                scope=" ".join(scopes),
                audience=" ".join(audience) if audience else None,
                access_token_ttl=access_token_ttl,
                secret_digest=self.digest(secret),
                can_introspect=can_introspect,
                created_at=now,
                updated_at=now,
                redirect_uris=" ".join(redirects),
                post_logout_redirect_uris=" ".join(logouts),
                public=public,
                first_party=first_party,
            )
        self.changes += 1
        return NewClient(client_id, None if public else secret)

    async def set_disabled(self, client_id: str, disabled: bool) -> bool:
        """Disable (or enable) a client; True when that changed something. A disabled client fails
        authentication (``invalid_client``) on this process at once and on every other instance
        within ``cache_ttl`` seconds; revoking its tokens is the caller's next step
        (:meth:`issuer.revocation.service.Revocation.revoke_client`)."""
        now = int(time.time())
        async with self.db.transaction() as conn:
            row = await self.store.get(conn, client_id)
            if row is None:
                raise LookupError(f"no client {client_id!r}")
            changed = (row.disabled_at is None) == disabled
            if changed:
                await self.store.update(
                    conn, client_id, disabled_at=now if disabled else None, updated_at=now
                )
        self.invalidate(client_id)
        return changed

    async def rotate_secret(self, client_id: str, *, keep_previous_for: int) -> NewClient:
        """A new primary secret; the old one stays valid for ``keep_previous_for`` seconds (0: not at all)."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = int(time.time())
        async with self.db.transaction() as conn:
            row = await self.store.get(conn, client_id)
            if row is None:
                raise LookupError(f"no client {client_id!r}")
            if row.public:
                raise ValueError(f"{client_id} is a public client: it has no secret to rotate")
            await self.store.update(
                conn,
                client_id,
                secret_digest=self.digest(secret),
                previous_secret_digest=bytes(row.secret_digest) if keep_previous_for else None,
                previous_secret_expires_at=now + keep_previous_for if keep_previous_for else None,
                updated_at=now,
            )
        self.invalidate(client_id)
        return NewClient(client_id, secret)

    async def update_redirects(
        self,
        client_id: str,
        *,
        add_redirect_uris: list[str] | None = None,
        remove_redirect_uris: list[str] | None = None,
        add_post_logout_redirect_uris: list[str] | None = None,
        remove_post_logout_redirect_uris: list[str] | None = None,
        first_party: bool | None = None,
    ) -> RedirectsUpdated:
        """Add and remove a client's redirect URIs (and post-logout ones), or change whether it is
        first-party; the result must pass :func:`check_registration` as a new registration would
        (ValueError otherwise, and nothing is written). Removing a URI the client does not have is
        an error naming it: a typo must not look like a removal that happened.

        Removals are exact strings; added URIs are checked first. The change applies on this
        process at once and on every other instance within ``cache_ttl`` seconds."""
        now = int(time.time())
        async with self.db.transaction() as conn:
            row = await self.store.get(conn, client_id)
            if row is None:
                raise LookupError(f"no client {client_id!r}")
            redirects = _edited(
                row.redirect_uris.split(), add_redirect_uris or [], remove_redirect_uris or [], "redirect URI"
            )
            logouts = _edited(
                row.post_logout_redirect_uris.split(),
                add_post_logout_redirect_uris or [],
                remove_post_logout_redirect_uris or [],
                "post-logout redirect URI",
            )
            if "authorization_code" in row.grant_types.split() and not redirects:
                raise ValueError("an authorization_code client keeps at least one redirect URI")
            redirects, logouts = check_registration(
                row.grant_types.split(),
                public=bool(row.public),
                redirect_uris=redirects,
                post_logout_redirect_uris=logouts,
            )
            party = bool(row.first_party) if first_party is None else first_party
            changed = (
                redirects != row.redirect_uris.split()
                or logouts != row.post_logout_redirect_uris.split()
                or party != bool(row.first_party)
            )
            if changed:
                await self.store.update(
                    conn,
                    client_id,
                    redirect_uris=" ".join(redirects),
                    post_logout_redirect_uris=" ".join(logouts),
                    first_party=party,
                    updated_at=now,
                )
        self.invalidate(client_id)
        return RedirectsUpdated(client_id, tuple(redirects), tuple(logouts), party, changed)


def _edited(current: list[str], add: list[str], remove: list[str], what: str) -> list[str]:
    """``current`` without ``remove`` (each must be there) and then with ``add`` (checked, once each)."""
    for uri in remove:
        if uri not in current:
            raise ValueError(f"the client has no {what} {uri!r}")
    kept = [uri for uri in current if uri not in set(remove)]
    return kept + [check_redirect_uri(uri) for uri in add]
