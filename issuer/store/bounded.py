"""Request metadata as it is stored: bounded, valid text, so that writing it can never fail.

Client addresses and other values a client controls reach the audit trail and the
``refresh_tokens.used_from`` column. Their columns are ``VARCHAR(100)`` (PostgreSQL enforces the
length) and PostgreSQL text can hold neither NUL nor a lone surrogate: an unchecked value would
make the insert fail and roll back whatever shared its transaction, a family revocation included.
So every such value goes through this module first:

* an address that parses as an IP address is stored as its canonical text (``ipaddress``);
* any other value that fits its column and is printable (no control characters, no
  surrogates) is stored as it is (a name such as ``testclient``);
* anything else becomes a marked, bounded form: ``?`` + the start of the value with every
  non-printable or non-ASCII character escaped (``\\x00``, ``\\u00e9``) + ``#`` + the first 16 hex
  digits of its SHA-256. Two different values never look alike by accident, and the original can
  be matched against its digest.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata

__all__ = ["ADDRESS_CHARS", "bounded_text", "stored_address"]

ADDRESS_CHARS = 100  # refresh_tokens.used_from, audit_events.address
_DIGEST_HEX = 16
MARK = "?"
# A value already in the marked form is kept as it is (storing it again changes nothing).
_MARKED = re.compile(r"\?[\x21\x22\x24-\x3e\x40-\x7e]*#[0-9a-f]{16}")


def _escaped(value: str, limit: int) -> str:
    out: list[str] = []
    size = 0
    for ch in value:
        code = ord(ch)
        if 0x21 <= code <= 0x7E and ch not in "\\?#":
            piece = ch
        elif code <= 0xFF:
            piece = f"\\x{code:02x}"
        elif code <= 0xFFFF:
            piece = f"\\u{code:04x}"
        else:
            piece = f"\\U{code:08x}"
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _printable(value: str) -> bool:
    return all(ch == " " or unicodedata.category(ch)[0] not in "CZ" for ch in value)


def bounded_text(value: str | None, limit: int) -> str | None:
    """``value`` unchanged when it is printable and at most ``limit`` characters, else the marked
    form (at most ``limit`` characters, ASCII only)."""
    if value is None:
        return None
    if len(value) <= limit:
        if _MARKED.fullmatch(value) or (not value.startswith(MARK) and _printable(value)):
            return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_HEX]
    room = max(0, limit - len(MARK) - 1 - _DIGEST_HEX)
    return f"{MARK}{_escaped(value, room)}#{digest}"


def stored_address(address: str | None) -> str | None:
    """A client address as stored: an IP address in canonical form, anything else bounded."""
    if address is None:
        return None
    if len(address) <= ADDRESS_CHARS:
        try:
            canonical = str(ipaddress.ip_address(address))
        except ValueError:
            pass
        else:
            if len(canonical) <= ADDRESS_CHARS and _printable(canonical):
                return canonical
    return bounded_text(address, ADDRESS_CHARS)
