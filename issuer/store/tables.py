"""The schema: SQLModel tables, the one place every column is declared.

Timestamps are integer Unix seconds (UTC), the unit of JWT ``iat``/``exp``. Secrets never
appear: clients keep HMAC-SHA-256 digests, users argon2id hashes, refresh tokens their
SHA-256, signing keys an AES-GCM ciphertext of the private key. Every change to this file is
an Alembic revision in the top-level ``alembic/versions``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, text
from sqlmodel import Field, SQLModel

__all__ = [
    "AuditEvent",
    "AuthorizationCode",
    "AuthorizationRequest",
    "BrowserSession",
    "Client",
    "Consent",
    "DenylistEntry",
    "RefreshFamily",
    "RefreshToken",
    "SigningKey",
    "User",
    "metadata",
]

metadata = SQLModel.metadata


def _ts(nullable: bool = False, index: bool = False) -> object:
    return Field(
        default=None if nullable else ..., sa_column=Column(BigInteger, nullable=nullable, index=index)
    )


class Client(SQLModel, table=True):
    __tablename__ = "clients"

    client_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    grant_types: str = Field(max_length=200)  # space-separated
    scope: str = Field(sa_type=Text)  # space-separated scopes the client may ask for
    audience: str | None = Field(default=None, sa_type=Text)  # space-separated; None: the default
    access_token_ttl: int | None = Field(default=None)
    secret_digest: bytes = Field(sa_type=LargeBinary)
    previous_secret_digest: bytes | None = Field(default=None, sa_type=LargeBinary)
    previous_secret_expires_at: int | None = _ts(nullable=True)  # type: ignore[assignment]
    can_introspect: bool = Field(default=False)
    created_at: int = _ts()  # type: ignore[assignment]
    updated_at: int = _ts()  # type: ignore[assignment]
    disabled_at: int | None = _ts(nullable=True)  # type: ignore[assignment]
    # Browser sign-in (DESIGN.md): registered redirect URIs, space-separated, matched exactly
    # (loopback on any port); a public client has no secret (token_endpoint_auth_method none);
    # a first-party client skips the consent page.
    redirect_uris: str = Field(default="", sa_type=Text)
    post_logout_redirect_uris: str = Field(default="", sa_type=Text)
    public: bool = Field(default=False)
    first_party: bool = Field(default=False)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=64)  # the stable `sub`
    username: str = Field(max_length=200, unique=True, index=True)
    password_hash: str = Field(max_length=400)
    created_at: int = _ts()  # type: ignore[assignment]
    updated_at: int = _ts()  # type: ignore[assignment]
    disabled_at: int | None = _ts(nullable=True)  # type: ignore[assignment]


class RefreshFamily(SQLModel, table=True):
    """One login of one subject at one client; its id is the access tokens' ``sid``."""

    __tablename__ = "refresh_families"
    __table_args__ = (
        Index("ix_refresh_families_subject", "subject"),
        Index("ix_refresh_families_client", "client_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=64)
    subject: str = Field(max_length=200)
    scope: str = Field(sa_type=Text)  # what the login granted: the ceiling for every rotation
    created_at: int = _ts()  # type: ignore[assignment]
    expires_at: int = _ts()  # type: ignore[assignment]  # absolute lifetime
    last_used_at: int = _ts()  # type: ignore[assignment]
    revoked_at: int | None = _ts(nullable=True)  # type: ignore[assignment]
    revoked_reason: str | None = Field(default=None, max_length=200)
    # The browser session (BrowserSession.id) the login was made in, if any: ending that session
    # (log-out, an operator) revokes the family.
    browser_session_id: str | None = Field(default=None, max_length=64, index=True)


class RefreshToken(SQLModel, table=True):
    """A refresh token's SHA-256 digest and its single-use state."""

    __tablename__ = "refresh_tokens"

    digest: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    family_id: str = Field(max_length=64, index=True)
    client_id: str = Field(max_length=64)
    scope: str = Field(sa_type=Text)
    issued_at: int = _ts()  # type: ignore[assignment]
    expires_at: int = _ts()  # type: ignore[assignment]  # idle expiry, never past the family's
    used_at: int | None = _ts(nullable=True)  # type: ignore[assignment]
    used_from: str | None = Field(default=None, max_length=100)  # address of the first presentation


class SigningKey(SQLModel, table=True):
    """A key of the ring: ``next`` (published), ``active`` (signs; one at a time), ``retired``."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        # At most one active key, enforced by the database: two racing rotations cannot both win.
        Index(
            "uq_signing_keys_one_active",
            "state",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
    )

    kid: str = Field(primary_key=True, max_length=100)  # RFC 7638 thumbprint
    alg: str = Field(max_length=20)
    state: str = Field(max_length=20, index=True)
    public_jwk: str = Field(sa_type=Text)  # JSON, public members only
    private_key: bytes = Field(sa_type=LargeBinary)  # AES-256-GCM(nonce || ciphertext) of PKCS#8 DER
    kek_id: str = Field(max_length=32)  # which key-encryption key wrapped it
    created_at: int = _ts()  # type: ignore[assignment]
    state_changed_at: int = _ts()  # type: ignore[assignment]
    activated_at: int | None = _ts(nullable=True)  # type: ignore[assignment]
    retired_at: int | None = _ts(nullable=True)  # type: ignore[assignment]


class AuditEvent(SQLModel, table=True):
    """Append-only trail of security events (reuse detected, revocations, key changes)."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: int = _ts(index=True)  # type: ignore[assignment]
    event: str = Field(max_length=100)
    subject: str | None = Field(default=None, max_length=200)
    client_id: str | None = Field(default=None, max_length=64)
    family_id: str | None = Field(default=None, max_length=64)
    address: str | None = Field(default=None, max_length=100)
    detail: str = Field(default="{}", sa_type=Text)  # JSON; never a token or secret


class DenylistEntry(SQLModel, table=True):
    """The durable denylist (see :mod:`issuer.revocation.denylist` for the entry kinds and matching rules).

    Append-only; ``id`` is the feed cursor; rows are pruned once ``exp`` has passed.
    """

    __tablename__ = "denylist"
    __table_args__ = (Index("ix_denylist_kind_value", "kind", "value"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # jti, sid, sub, client, kid
    value: str = Field(max_length=200)
    at: int = _ts()  # type: ignore[assignment]  # when it was revoked
    exp: int = _ts(index=True)  # type: ignore[assignment]  # when the entry may be forgotten
    created_at: int = _ts(index=True)  # type: ignore[assignment]  # when the row was written


class BrowserSession(SQLModel, table=True):
    """A browser's sign-in at the issuer (single sign-on): the cookie's SHA-256, never the cookie.

    It ends at the first of ``idle_expires_at`` (pushed forward on use), ``expires_at`` (absolute)
    and ``ended_at`` (log-out, or an operator's revocation).
    """

    __tablename__ = "browser_sessions"

    digest: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    id: str = Field(max_length=64, unique=True)  # the public id (id_token ``sid``); not the cookie
    subject: str = Field(max_length=200, index=True)
    auth_time: int = _ts()  # type: ignore[assignment]  # when the user last entered a password
    created_at: int = _ts()  # type: ignore[assignment]
    last_used_at: int = _ts()  # type: ignore[assignment]
    idle_expires_at: int = _ts()  # type: ignore[assignment]
    expires_at: int = _ts()  # type: ignore[assignment]
    ended_at: int | None = _ts(nullable=True)  # type: ignore[assignment]
    ended_reason: str | None = Field(default=None, max_length=200)


class AuthorizationCode(SQLModel, table=True):
    """A one-time authorization code (RFC 6749 4.1.2): its SHA-256 and everything it is bound to.

    Spent by one conditional update of ``used_at``; ``family_id`` records what its one use issued,
    so that a replay can revoke it (RFC 6749 4.1.2, RFC 9700 4.2.4).
    """

    __tablename__ = "authorization_codes"

    digest: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    client_id: str = Field(max_length=64)
    redirect_uri: str = Field(sa_type=Text)
    code_challenge: str = Field(max_length=128)
    scope: str = Field(sa_type=Text)
    nonce: str | None = Field(default=None, sa_type=Text)
    session_id: str = Field(max_length=64)  # BrowserSession.id
    subject: str = Field(max_length=200)
    auth_time: int = _ts()  # type: ignore[assignment]
    created_at: int = _ts()  # type: ignore[assignment]
    expires_at: int = _ts(index=True)  # type: ignore[assignment]
    used_at: int | None = _ts(nullable=True)  # type: ignore[assignment]
    family_id: str | None = Field(default=None, max_length=64)


class Consent(SQLModel, table=True):
    """A user's consent to one scope for one client, remembered until revoked."""

    __tablename__ = "consents"

    subject: str = Field(primary_key=True, max_length=200)
    client_id: str = Field(primary_key=True, max_length=64)
    scope: str = Field(primary_key=True, max_length=200)  # one scope token per row
    granted_at: int = _ts()  # type: ignore[assignment]


class AuthorizationRequest(SQLModel, table=True):
    """A validated authorization request waiting for the user (login, consent).

    Kept server-side under a random ``id`` (in the pages' URLs and forms) and bound to the browser
    that made it: ``binding_digest`` is the SHA-256 of a short-lived cookie's value, so that the
    login page of one browser cannot be completed in another (DESIGN.md, "Browser sign-in").
    Everything the authorization response and the code will need is here, already checked.
    """

    __tablename__ = "authorization_requests"

    id: str = Field(primary_key=True, max_length=64)
    binding_digest: bytes = Field(sa_type=LargeBinary)
    client_id: str = Field(max_length=64)
    redirect_uri: str = Field(sa_type=Text)  # as the client sent it (matched against the registration)
    scope: str = Field(sa_type=Text)  # what will be granted (within the client's scopes)
    state: str | None = Field(default=None, sa_type=Text)
    code_challenge: str = Field(max_length=128)
    nonce: str | None = Field(default=None, sa_type=Text)
    prompt: str | None = Field(default=None, max_length=100)  # space-separated: none, login, consent
    max_age: int | None = Field(default=None, sa_type=BigInteger)
    login_hint: str | None = Field(default=None, max_length=200)
    created_at: int = _ts()  # type: ignore[assignment]
    expires_at: int = _ts(index=True)  # type: ignore[assignment]
