"""Redirect URIs: which ones a client may register, and when a request's URI matches one.

The redirect URI is where the authorization endpoint sends a code, so a loose rule here is an
open redirector that hands codes to an attacker (RFC 9700 4.1). The rules:

- **Registration** (RFC 6749 3.1.2, RFC 8252 7): an absolute URI without fragment (3.1.2 MUST);
  ``https`` for web apps; ``http`` only on a loopback host (``127.0.0.1``, ``[::1]``,
  ``localhost``: a native app's local listener, RFC 8252 7.3); or a private-use scheme of a native
  app in reverse-domain form (``com.example.app:/cb``, RFC 8252 7.1). No user information, no
  whitespace or control characters, at most :data:`MAX_LENGTH` characters.
- **Matching** (RFC 9700 2.1: exact string matching): the requested URI must equal a registered
  one character for character, except that a loopback ``http`` URI matches on any port
  (RFC 8252 7.3 MUST), all else (scheme, host, path, query) still exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

MAX_LENGTH = 2000
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

# RFC 3986 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). A private-use scheme has a dot
# (reverse domain name, RFC 8252 7.1), which also keeps out javascript:, data:, file: and the like.
_PRIVATE_SCHEME = re.compile(r"[a-z][a-z0-9+\-]*(\.[a-z0-9+\-]+)+")
# Printable ASCII without space; anything else (controls, spaces, non-ASCII) is refused outright.
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


class RedirectURIError(ValueError):
    """A redirect URI that may not be registered; the message says why, for the operator."""


def _split(uri: str) -> SplitResult:
    try:
        return urlsplit(uri)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise RedirectURIError(f"{uri!r} is not a URI ({exc})") from None


def is_loopback(parts: SplitResult) -> bool:
    """An ``http`` URI whose host is a loopback address (RFC 8252 7.3)."""
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS


def check_redirect_uri(uri: str) -> str:
    """Return ``uri`` if a client may register it, else raise :class:`RedirectURIError`."""
    if not uri or len(uri) > MAX_LENGTH:
        raise RedirectURIError(f"a redirect URI has 1 to {MAX_LENGTH} characters")
    if not _PRINTABLE.fullmatch(uri):
        raise RedirectURIError(f"{uri!r} has whitespace, control or non-ASCII characters")
    if "#" in uri:
        raise RedirectURIError(f"{uri!r} has a fragment (RFC 6749 3.1.2)")
    parts = _split(uri)
    scheme = parts.scheme
    if not scheme or uri[: len(scheme)].lower() != uri[: len(scheme)] or not uri.startswith(scheme + ":"):
        raise RedirectURIError(f"{uri!r} is not an absolute URI with a lower-case scheme")
    if scheme in ("https", "http"):
        if not parts.hostname or parts.netloc.startswith(("@", ":")):
            raise RedirectURIError(f"{uri!r} has no host")
        if "@" in parts.netloc:
            raise RedirectURIError(f"{uri!r} has user information")
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number in range)
        except ValueError:
            raise RedirectURIError(f"{uri!r} has an invalid port") from None
        if scheme == "http" and not is_loopback(parts):
            raise RedirectURIError(f"{uri!r}: http is allowed only on 127.0.0.1, [::1] or localhost")
        return uri
    if _PRIVATE_SCHEME.fullmatch(scheme):
        if parts.netloc:
            # RFC 8252 7.1: "com.example.app:/oauth2redirect", one slash, no authority.
            raise RedirectURIError(f"{uri!r}: a private-use scheme URI has no authority (one slash)")
        return uri
    raise RedirectURIError(
        f"{uri!r}: the scheme must be https, http on loopback, or a private-use scheme such as"
        " com.example.app"
    )


def _without_port(parts: SplitResult) -> tuple[str, str, str, str]:
    # The host as written (no case folding): only the port may differ.
    host = parts.netloc.rsplit(":", 1)[0] if parts.port is not None else parts.netloc
    return (parts.scheme, host, parts.path, parts.query)


def matches(requested: str, registered: Iterable[str]) -> str | None:
    """The registered URI that ``requested`` matches, or ``None``.

    Exact string comparison, except that loopback ``http`` URIs ignore the port (RFC 8252 7.3).
    A requested URI with a fragment, user information or odd characters never matches, whatever
    is registered.
    """
    if not requested or len(requested) > MAX_LENGTH or not _PRINTABLE.fullmatch(requested):
        return None
    candidates = list(registered)
    if requested in candidates:
        return requested
    if "#" in requested or "@" in requested.split("?", 1)[0]:
        return None
    try:
        asked = urlsplit(requested)
        asked.port  # noqa: B018
    except ValueError:
        return None
    if not is_loopback(asked):
        return None
    for uri in candidates:
        try:
            parts = urlsplit(uri)
        except ValueError:
            continue
        if is_loopback(parts) and _without_port(parts) == _without_port(asked):
            return uri
    return None
