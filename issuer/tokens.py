"""Minting tokens: RFC 9068 JWT access tokens and opaque refresh tokens; scope strings.

Refresh tokens are ``irt_`` + 256 random bits, base64url (the prefix lets secret scanners find
leaked ones). Only their SHA-256 is stored. A successor is ``irt_`` + HMAC-SHA-256 of its
predecessor under a key derived from the secret-hashing key: as unpredictable as a random token
to anyone without that key, and recomputable by the issuer, so the idempotent replay inside the
grace window returns the same successor without any token kept in plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from issuer.errors import InvalidScope, TemporarilyUnavailable
from issuer.keys.ring import KeyRing, Signer

__all__ = [
    "REFRESH_PREFIX",
    "AccessTokenMinter",
    "RefreshTokens",
    "derive_key",
    "format_scope",
    "parse_scope",
    "scope_within",
]

REFRESH_PREFIX = "irt_"
_REFRESH_SHAPE = re.compile(r"irt_[A-Za-z0-9_-]{43}")
# RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")


def derive_key(root: bytes, purpose: str) -> bytes:
    """A 32-byte subkey of ``root`` for one purpose (HKDF-SHA-256, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"issuer/" + purpose.encode()).derive(
        root
    )


def parse_scope(raw: str | None) -> frozenset[str] | None:
    """A requested scope string, or None when absent. Malformed: ``invalid_scope``."""
    if raw is None:
        return None
    tokens = raw.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise InvalidScope("scope must be space-separated scope tokens (RFC 6749 3.3)")
    return frozenset(tokens)


def scope_within(wanted: frozenset[str] | None, ceiling: frozenset[str]) -> str:
    """RFC 6749 3.3: ``wanted`` if within ``ceiling`` (``invalid_scope`` if not); None means all of it."""
    if wanted is None:
        return format_scope(ceiling)
    if not wanted <= ceiling:
        raise InvalidScope("the requested scope exceeds what may be granted")
    return format_scope(wanted)


def format_scope(scopes: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(scopes))


class RefreshTokens:
    """Generates, digests and derives refresh tokens."""

    def __init__(self, hmac_key: bytes) -> None:
        self._successor_key = derive_key(hmac_key, "refresh-successor/v1")

    @staticmethod
    def new() -> str:
        return REFRESH_PREFIX + secrets.token_urlsafe(32)

    @staticmethod
    def well_formed(token: str) -> bool:
        return _REFRESH_SHAPE.fullmatch(token) is not None

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("ascii")).digest()

    def successor_of(self, token: str) -> str:
        mac = hmac.new(self._successor_key, token.encode("ascii"), hashlib.sha256).digest()
        return REFRESH_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    claims: dict[str, Any]
    expires_in: int


class AccessTokenMinter:
    """RFC 9068 access tokens signed by the key ring's active key, never by a revoked one.

    ``revoked_kids`` is the denylist's set of revoked signing keys
    (:attr:`issuer.revocation.denylist.Denylist.kids`): a key listed there does not sign even while the ring
    still holds it (``issuer keys revoke`` ran in another process and the ring has not reloaded
    yet); the request answers 503 ``temporarily_unavailable`` (retry) until the ring has its
    successor. One set lookup per token.
    """

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        revoked_kids: Container[str] = frozenset(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.revoked_kids = revoked_kids
        self.clock = clock

    def mint(
        self,
        *,
        subject: str,
        client_id: str,
        audience: tuple[str, ...],
        scope: str,
        ttl: int,
        sid: str | None = None,
        now: int | None = None,
    ) -> AccessToken:
        issued = int(self.clock()) if now is None else now
        # RFC 9068 2.2: iss, exp, aud, sub, client_id, iat, jti are required.
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience[0] if len(audience) == 1 else list(audience),
            "exp": issued + ttl,
            "iat": issued,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
        }
        if scope:
            claims["scope"] = scope
        if sid is not None:
            claims["sid"] = sid
        return AccessToken(self._signer().sign(claims), claims, ttl)

    def _signer(self) -> Signer:
        signer = self.keyring.signer  # TemporarilyUnavailable when no key is active
        if signer.kid in self.revoked_kids:
            raise TemporarilyUnavailable(
                detail="the active signing key was revoked; the key ring is reloading"
            )
        return signer

    async def ensure_can_sign(self) -> None:
        """A grant's ready check: 503 before a refresh token is spent when nothing may sign now."""
        self._signer()
