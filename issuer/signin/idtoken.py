"""OpenID Connect ID tokens (OpenID Connect Core 1.0, 2 and 3.1.3.6): minted, and read back as
``id_token_hint`` at logout (OpenID Connect RP-Initiated Logout 1.0, 2).

An ID token is signed by the key ring's active key, like the access tokens, but with header
``typ: JWT`` (an access token's is ``at+jwt``, RFC 9068 2.1): a resource server that checks
``typ`` never takes one for the other. Its claims:

- ``iss``, ``sub``, ``aud`` (the client id), ``azp`` (the same client id), ``exp``, ``iat``;
- ``auth_time`` (when the user last entered a password in this browser session);
- ``nonce`` when the authorization request sent one (echoed exactly);
- ``sid``: the browser session's public id (OpenID Connect Front-Channel Logout 1.0, 3). Access
  tokens' ``sid`` is the refresh family (the login at one client); the ID token's names the
  browser session the login was made in.

A hint is accepted when its signature is by a key of our JWKS, its ``typ`` is ``JWT`` and its
``iss`` is ours; an expired hint is still a hint (RP-Initiated Logout 1.0, 2: the OP should accept
it), and its ``aud`` says which client asks.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

import jwt

from issuer.errors import TemporarilyUnavailable
from issuer.keys.ring import KeyRing

__all__ = ["IdTokenHint", "IdTokens"]

MAX_HINT_BYTES = 8192


@dataclass(frozen=True, slots=True)
class IdTokenHint:
    """What a valid ``id_token_hint`` says."""

    subject: str
    client_id: str  # its aud (the client it was issued to)
    session_id: str | None  # its sid (the browser session)
    claims: dict[str, Any]


class IdTokens:
    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        revoked_kids: Container[str] = frozenset(),
        *,
        clock: Callable[[], float],
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.revoked_kids = revoked_kids
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_etag: str | None = None

    def mint(
        self,
        *,
        subject: str,
        client_id: str,
        auth_time: int,
        session_id: str,
        ttl: int,
        nonce: str | None = None,
        now: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        issued = int(self.clock()) if now is None else now
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": client_id,
            "azp": client_id,
            "exp": issued + ttl,
            "iat": issued,
            "auth_time": auth_time,
            "sid": session_id,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if extra:
            claims.update({name: value for name, value in extra.items() if name not in claims})
        signer = self.keyring.signer  # TemporarilyUnavailable when no key is active
        if signer.kid in self.revoked_kids:
            raise TemporarilyUnavailable(
                detail="the active signing key was revoked; the key ring is reloading"
            )
        return signer.sign(claims, id_token=True)

    def _published(self) -> dict[str, jwt.PyJWK]:
        if self._keys_etag != self.keyring.jwks_etag:
            keys = {}
            for member in self.keyring.jwks.get("keys", []):
                try:
                    keys[member["kid"]] = jwt.PyJWK(member)
                except (jwt.PyJWKError, KeyError):
                    continue
            self._keys, self._keys_etag = keys, self.keyring.jwks_etag
        return self._keys

    def read_hint(self, token: str) -> IdTokenHint | None:
        """The hint's subject, client and session, or None when it is not an ID token of ours
        (wrong signature, unknown or revoked key, wrong ``typ`` or ``iss``, malformed)."""
        if not token or len(token) > MAX_HINT_BYTES:
            return None
        try:
            header = jwt.get_unverified_header(token)
            key = self._published().get(str(header.get("kid")))
            if key is None or header.get("typ") != "JWT" or key.key_id in self.revoked_kids:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                issuer=self.issuer,
                options={"verify_exp": False, "verify_aud": False, "require": ["iss", "sub", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        audience = claims.get("aud")
        client_id = audience[0] if isinstance(audience, list) and len(audience) == 1 else audience
        subject = claims.get("sub")
        sid = claims.get("sid")
        if not isinstance(client_id, str) or not isinstance(subject, str):
            return None
        return IdTokenHint(subject, client_id, sid if isinstance(sid, str) else None, claims)
