"""PKCE (RFC 7636), S256 only: the challenge a client sends and the verifier that answers it.

``plain`` is refused (RFC 9700 2.1.1: clients SHOULD use S256; OAuth 2.1 drops plain) and so is a
missing challenge: PKCE is required of every client, confidential ones included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

METHODS = ("S256",)

# RFC 7636 4.1: code-verifier = 43*128unreserved, unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# RFC 7636 4.2: S256 gives BASE64URL(SHA-256(verifier)) without padding: 43 characters.
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


class PKCEError(ValueError):
    """A challenge or method the authorization endpoint refuses; the message is safe to show."""


def check_challenge(challenge: str | None, method: str | None) -> str:
    """Return the challenge of an authorization request, or raise :class:`PKCEError`."""
    if not challenge:
        raise PKCEError("code_challenge is required (PKCE, RFC 7636)")
    if method != "S256":
        # RFC 7636 4.3: a missing method means "plain", which this server does not support.
        raise PKCEError("code_challenge_method must be S256")
    if not _S256_CHALLENGE.fullmatch(challenge):
        raise PKCEError("code_challenge is not an S256 challenge (43 base64url characters)")
    return challenge


def s256(verifier: str) -> str:
    """RFC 7636 4.2: ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def well_formed_verifier(verifier: str) -> bool:
    """RFC 7636 4.1 syntax: 43 to 128 characters of ``[A-Za-z0-9-._~]``."""
    return _VERIFIER.fullmatch(verifier) is not None


def verify(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 4.6: does ``verifier`` answer ``challenge``? A malformed verifier never does."""
    if not verifier or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)
