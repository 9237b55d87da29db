"""``return_to``: where ``/bff/callback`` sends the browser after the login. Same-origin paths only,
so that the BFF is never an open redirector (RFC 9700 4.11, draft-ietf-oauth-browser-based-apps).

A path is accepted when it starts with exactly one ``/`` and has no scheme, authority, backslash
(browsers read ``/\\evil`` as ``//evil``), control or non-ASCII character; anything else is
refused, not repaired.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["MAX_RETURN_TO", "safe_return_to"]

MAX_RETURN_TO = 2048


def safe_return_to(value: str | None) -> str | None:
    """``value`` if it is a same-origin path (``/`` when absent), else None."""
    if value is None or value == "":
        return "/"
    if len(value) > MAX_RETURN_TO or not value.isascii() or not value.isprintable():
        return None
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value
