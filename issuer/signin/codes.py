"""Authorization codes and the sign-in's other random values: shape and digest.

A code is ``ica_`` + 256 random bits, base64url (the prefix lets secret scanners find leaked
ones); the database keeps only its SHA-256 (:class:`issuer.store.signin.CodeStore`). Browser
session cookies and pending-request bindings are 256 random bits too, digested the same way.
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["CODE_PREFIX", "digest", "new_code", "new_secret", "well_formed_code"]

CODE_PREFIX = "ica_"
_CODE_SHAPE = re.compile(r"ica_[A-Za-z0-9_-]{43}")


def new_code() -> str:
    return CODE_PREFIX + secrets.token_urlsafe(32)


def well_formed_code(code: str) -> bool:
    return _CODE_SHAPE.fullmatch(code) is not None


def new_secret() -> str:
    """256 random bits, base64url: a session cookie's or a binding cookie's value."""
    return secrets.token_urlsafe(32)


def digest(value: str) -> bytes:
    """What the database keeps of a code or a cookie: its SHA-256."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
