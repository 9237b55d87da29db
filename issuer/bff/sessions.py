"""BFF sessions: what the server keeps for one signed-in browser, and how its secrets are kept.

- The browser holds only the session id, 256 random bits (``secrets.token_urlsafe(32)``) in the
  ``__Host-bff-session`` cookie; the store keys the session by the SHA-256 of that id, so a
  leaked database or Redis dump names no live cookie.
- The tokens (access, refresh, id token) are sealed with AES-256-GCM under ``BFF_SESSION_KEY``
  (a random 96-bit nonce per seal; the associated data binds the ciphertext to its session's
  digest, so a sealed blob copied to another row does not open).
- The login state carried across the issuer's round trip (``state``, ``nonce``, the PKCE
  verifier, ``return_to``) is sealed the same way into the short-lived ``__Host-bff-login``
  cookie, with its own associated data and expiry.

Nothing here does I/O (the key file aside, :func:`load_session_key`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from issuer.bff.settings import BffSettings
from issuer.keys.material import b64decode, b64encode
from issuer.settings import SettingsError

__all__ = [
    "LoginState",
    "Sealer",
    "Session",
    "Tokens",
    "digest",
    "load_session_key",
    "new_session_id",
]

NONCE_BYTES = 12
KEY_FILE = "bff_session_key"
_SESSION_AAD = b"issuer-bff session\x00"
_LOGIN_AAD = b"issuer-bff login\x00"


def new_session_id() -> str:
    """A fresh cookie value: 256 random bits, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def digest(session_id: str) -> bytes:
    """What the store keeps of a session id: its SHA-256."""
    return hashlib.sha256(session_id.encode("ascii", "replace")).digest()


class Tokens(msgspec.Struct, frozen=True):
    """The session's tokens (sealed at rest); ``expires_at`` is the access token's expiry and
    ``obtained_at`` when the BFF received it (their difference is its lifetime)."""

    access_token: str
    expires_at: int
    refresh_token: str | None = None
    id_token: str | None = None
    obtained_at: int = 0

    def refresh_due(self, now: int, leeway: int) -> bool:
        """Refresh ``leeway`` seconds before expiry, but never earlier than half the lifetime."""
        lifetime = max(0, self.expires_at - self.obtained_at)
        return now >= self.expires_at - min(leeway, lifetime // 2)


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser. ``version`` grows with each refresh (a compare-and-set token)."""

    digest: bytes
    subject: str
    claims: dict[str, Any] = field(hash=False)
    tokens: Tokens
    created_at: int
    last_seen_at: int
    expires_at: int  # absolute end (BFF_SESSION_ABSOLUTE_TTL after login)
    sid: str | None = None  # the refresh family's sid (the access token's), for revocations
    version: int = 1

    def ends_at(self, idle_ttl: int) -> int:
        """When the session ends unless it is used: idle expiry, capped by the absolute one."""
        return min(self.last_seen_at + idle_ttl, self.expires_at)


class LoginState(msgspec.Struct, frozen=True):
    """What ``/bff/login`` remembers for ``/bff/callback`` (in the sealed login cookie)."""

    state: str
    nonce: str
    verifier: str
    return_to: str
    expires_at: int


class Sealer:
    """AES-256-GCM with one key: seal/open the tokens of a session and the login state."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the session key is 32 bytes")
        self._aead = AESGCM(key)

    def _seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def _open(self, sealed: bytes, aad: bytes) -> bytes | None:
        if len(sealed) <= NONCE_BYTES:
            return None
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            return None

    def seal_tokens(self, tokens: Tokens, session_digest: bytes) -> bytes:
        return self._seal(msgspec.json.encode(tokens), _SESSION_AAD + session_digest)

    def open_tokens(self, sealed: bytes, session_digest: bytes) -> Tokens | None:
        """The tokens, or None when the blob was made under another key or for another session."""
        plain = self._open(sealed, _SESSION_AAD + session_digest)
        return None if plain is None else msgspec.json.decode(plain, type=Tokens)

    def seal_login(self, state: LoginState) -> str:
        return b64encode(self._seal(msgspec.json.encode(state), _LOGIN_AAD))

    def open_login(self, cookie: str, now: int) -> LoginState | None:
        """The login state of a cookie, or None (forged, another key, malformed, expired)."""
        try:
            sealed = b64decode(cookie)
        except ValueError:
            return None
        plain = self._open(sealed, _LOGIN_AAD)
        if plain is None:
            return None
        try:
            state = msgspec.json.decode(plain, type=LoginState)
        except msgspec.ValidationError:
            return None
        return state if now < state.expires_at else None


def load_session_key(settings: BffSettings) -> bytes:
    """``BFF_SESSION_KEY``, or the key file in ``BFF_KEYS_DIR`` (created 0600 on first start)."""
    if settings.session_key is not None:
        return b64decode(settings.session_key)
    from issuer.keys.material import _file_key

    try:
        return _file_key(Path(settings.keys_dir), KEY_FILE, create=True)
    except SettingsError as error:
        raise SettingsError(f"BFF_KEYS_DIR: {error}") from None
