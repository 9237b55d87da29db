"""The exact syntax of what crosses the edge: identifiers, tokens, cursors and Basic credentials,
checked by their ASCII grammar (RFC 6749 Appendix A) before anything is looked up or converted.

Nothing a client sends reaches the database or ``int()`` unless it matched one of these:

* every form parameter (name and value): ``*UNICODECHARNOCRLF`` (Appendix A: ``%x09 / %x20-7E /
  %x80-D7FF / %xE000-FFFD / %x10000-10FFFF``), the widest syntax of any OAuth parameter
  (``username``, ``password``); so no NUL, no other control character, no lone surrogate;
* ``client_id``: ``1*64VSCHAR`` (A.1: ``client-id = *VSCHAR``, ``VSCHAR = %x20-7E``; ours are
  ``cli_`` + base64url, 26 characters, and longer ids are never looked up);
* ``token`` (``/revoke``, ``/introspect``): ``1*8192VSCHAR`` (A.17/A.12 ``1*VSCHAR``; 8 KiB is
  far beyond any token we issue);
* cursors (``since``): ``1*18DIGIT`` with ASCII digits only (``str.isdigit`` and ``int()``
  accept Unicode digits, signs, underscores and spaces), at most :data:`MAX_CURSOR`;
* HTTP Basic credentials (RFC 7617, RFC 6749 2.3.1): canonical base64 (alphabet, padding and
  trailing bits exactly as an encoder writes them), strict UTF-8, one ``:``, then each half
  form-urldecoded and strict UTF-8 again, and the id as above.

Malformed values are the usual answers: 400 ``invalid_request``, or 401 ``invalid_client``
(with ``WWW-Authenticate`` when Basic was used) for credentials.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

from issuer.errors import InvalidClient, InvalidRequest

__all__ = [
    "MAX_CLIENT_ID",
    "MAX_TOKEN",
    "check_client_id",
    "check_cursor",
    "check_form_text",
    "check_token",
    "parse_basic",
]

MAX_CLIENT_ID = 64
MAX_TOKEN = 8192
MAX_CURSOR_DIGITS = 18  # never more digits than this reach int()
# The feed's cursor is a denylist row id: a 32-bit INTEGER on PostgreSQL, so no cursor this feed
# returned is larger (and a larger one made asyncpg fail the query: found by schemathesis).
MAX_CURSOR = 2**31 - 1

# RFC 6749 Appendix A: UNICODECHARNOCRLF (the character class, repeated).
_FORM_TEXT = re.compile("[\t\x20-\x7e\x80-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
_CLIENT_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_CLIENT_ID}}}", re.ASCII)
_TOKEN = re.compile(rf"[\x20-\x7e]{{1,{MAX_TOKEN}}}", re.ASCII)
_CURSOR = re.compile(rf"[0-9]{{1,{MAX_CURSOR_DIGITS}}}", re.ASCII)
# RFC 7617 2: credentials = "Basic" 1*SP token68; the base64 alphabet with its padding.
_BASIC = re.compile(r"[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+={0,2})", re.ASCII)


def check_form_text(name: str, value: str) -> None:
    """A form parameter's name and value are ``*UNICODECHARNOCRLF`` (no NUL, CR, LF, controls)."""
    if _FORM_TEXT.fullmatch(name) is None:
        raise InvalidRequest("a parameter name contains a control character")
    if _FORM_TEXT.fullmatch(value) is None:
        raise InvalidRequest(f"parameter {name[:40]!r} contains a control character")


def check_client_id(client_id: str, *, basic: bool) -> str:
    if _CLIENT_ID.fullmatch(client_id) is None:
        raise InvalidClient("malformed client_id", basic=basic, detail="malformed client_id")
    return client_id


def check_token(token: str, name: str = "token") -> str:
    if _TOKEN.fullmatch(token) is None:
        raise InvalidRequest(f"{name} must be 1 to {MAX_TOKEN} visible ASCII characters")
    return token


def check_cursor(raw: str, name: str = "since") -> int:
    if _CURSOR.fullmatch(raw) is None or int(raw, 10) > MAX_CURSOR:
        raise InvalidRequest(f"{name} must be a cursor returned by this feed")
    return int(raw, 10)


def _form_decode(part: bytes) -> str:
    # RFC 6749 2.3.1: the id and the secret are application/x-www-form-urlencoded, then Basic.
    return unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8", "strict")


def parse_basic(header: str) -> tuple[str, str]:
    """``(client_id, secret)`` of an ``Authorization: Basic`` header value, or ``InvalidClient``."""
    match = _BASIC.fullmatch(header)
    try:
        if match is None:
            raise ValueError("not Basic token68")
        encoded = match.group(1).encode("ascii")
        decoded = base64.b64decode(encoded, validate=True)
        if base64.b64encode(decoded) != encoded:  # padding and trailing bits exactly canonical
            raise ValueError("non-canonical base64")
        user, colon, password = decoded.partition(b":")
        if not colon:
            raise ValueError("no colon")
        decoded.decode("utf-8", "strict")  # RFC 7617 2.1: charset="UTF-8"
        client_id, secret = _form_decode(user), _form_decode(password)
    except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise InvalidClient("malformed Basic credentials", basic=True, detail="malformed Basic") from None
    if not secret:
        raise InvalidClient("malformed Basic credentials", basic=True, detail="empty Basic secret")
    if _TOKEN.fullmatch(secret) is None:
        raise InvalidClient("malformed Basic credentials", basic=True, detail="malformed Basic secret")
    return check_client_id(client_id, basic=True), secret
