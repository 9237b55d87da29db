"""CSRF tokens for the sign-in pages' forms, bound to the browser that was shown the form.

A form (login, consent, logout confirmation) carries a token that only the browser holding the
binding cookie can present: ``HMAC-SHA-256(key, purpose || binding)``, where ``binding`` is the
value of the short-lived cookie that also ties the pending authorization request to the browser
(DESIGN.md, "Browser sign-in"). A cross-site POST (login CSRF: signing the victim in as the
attacker) fails because the attacker's page can read neither the cookie nor a token made for it;
a token of one form is useless on another (``purpose``). The key is a subkey of the secret-hashing
key (:func:`issuer.tokens.derive_key`), so tokens survive restarts and agree across instances.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from issuer.tokens import derive_key

__all__ = ["CSRF"]

PURPOSES = frozenset({"login", "consent", "logout"})


class CSRF:
    def __init__(self, hmac_key: bytes) -> None:
        self._key = derive_key(hmac_key, "csrf/v1")

    def token(self, purpose: str, binding: str) -> str:
        """The token to put in the ``purpose`` form shown to the browser holding ``binding``."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown form {purpose!r}")
        if not binding:
            raise ValueError("a CSRF token needs the browser's binding cookie")
        mac = hmac.new(self._key, f"{purpose}\x00{binding}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def check(self, purpose: str, binding: str | None, presented: str | None) -> bool:
        """Whether ``presented`` is the ``purpose`` token of ``binding`` (constant time)."""
        if purpose not in PURPOSES or not binding or not presented or len(presented) > 100:
            return False
        return hmac.compare_digest(
            self.token(purpose, binding).encode(), presented.encode("utf-8", "replace")
        )
