"""The denylist's wire format: the one definition the issuer writes and every verifier reads.

An entry is the JSON object ``{"kind": K, "value": V, "at": AT, "exp": EXP}``:

* ``kind``: one of :data:`KINDS`; ``value``: 1-200 printable ASCII characters, no space, quote
  or backslash;
* ``at``: integer Unix seconds of the revocation;
* ``exp``: integer Unix seconds when the entry may be forgotten (no token it matches outlives it).

A token (its claims, and the ``kid`` of its JWS header) is revoked when any entry matches
(:func:`matches`):

=========  ==========================================================================
kind       matches when
=========  ==========================================================================
``jti``    ``value == claims.jti`` (one access token)
``sid``    ``value == claims.sid`` (every access token of one refresh family: one login)
``sub``    ``value == claims.sub`` and ``claims.iat <= at`` (log out everywhere)
``client`` ``value == claims.client_id`` and ``claims.iat <= at`` (a compromised client)
``kid``    ``value ==`` the JWS header ``kid`` (every token signed by a revoked key)
=========  ==========================================================================

``iat <= at`` fails closed within the revocation second; a token without a usable ``iat``
matches every ``sub``/``client`` entry of its subject/client.

Redis layout (``P`` is the prefix, the issuer's ``ISSUER_REDIS_PREFIX``, default ``issuer:``):
key ``P deny:KIND:VALUE`` (no spaces: :func:`entry_key`) holds the entry's JSON; key ``P
deny:loaded`` (:func:`loaded_marker`) marks a complete copy; channel ``P denylist``
(:func:`channel`) carries each new entry's JSON and :data:`RESET` after a rebuild (a subscriber
then reloads every key). Two entries of one key merge: the later ``at`` and ``exp`` win
(:meth:`Entry.merge`). This format is a contract: change it only with a new prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "RESET",
    "Entry",
    "candidate_keys",
    "channel",
    "entry_key",
    "entry_key_prefixes",
    "entry_pattern",
    "is_reset",
    "loaded_marker",
    "matches",
    "parse_entry",
    "valid_value",
]

KINDS = ("jti", "sid", "sub", "client", "kid")
RESET: dict[str, str] = {"kind": "reset"}  # on the channel: "Redis was rebuilt, load every key again"
_VALUE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]{1,200}")  # printable ASCII, no quote/backslash/space


def valid_value(value: object) -> bool:
    """Whether ``value`` may be an entry's value (and so part of a Redis key)."""
    return isinstance(value, str) and _VALUE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    value: str
    at: int
    exp: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "at": self.at, "exp": self.exp}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        """The entry of one decoded JSON object; :class:`ValueError` when it is not one."""
        kind, value, at, exp = data.get("kind"), data.get("value"), data.get("at"), data.get("exp")
        if kind not in KINDS or not isinstance(value, str) or not valid_value(value):
            raise ValueError("not a denylist entry")
        if type(at) is not int or type(exp) is not int:  # bool is an int subclass: refused too
            raise ValueError("not a denylist entry: at/exp must be integers")
        return cls(kind, value, at, exp)

    def merge(self, other: Entry) -> Entry:
        """The same key revoked twice: the later ``at`` covers more, the later ``exp`` lasts longer."""
        return Entry(self.kind, self.value, max(self.at, other.at), max(self.exp, other.exp))


def parse_entry(raw: Any) -> Entry | None:
    """The entry of one wire value (JSON text or bytes, or a decoded object), or None."""
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict):
        return None
    try:
        return Entry.from_json(raw)
    except ValueError:
        return None


def is_reset(decoded: Any) -> bool:
    """Whether a decoded channel message is :data:`RESET`."""
    return isinstance(decoded, dict) and decoded.get("kind") == RESET["kind"]


def matches(entry: Entry, claims: Mapping[str, Any], header_kid: str | None) -> bool:
    """The matching rule of the module docstring, for one entry."""
    kind = entry.kind
    if kind == "jti":
        return claims.get("jti") == entry.value
    if kind == "sid":
        return claims.get("sid") == entry.value
    if kind == "kid":
        return header_kid is not None and header_kid == entry.value
    if kind in ("sub", "client"):
        if claims.get("sub" if kind == "sub" else "client_id") != entry.value:
            return False
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            return True  # no usable iat: fail closed
        return iat <= entry.at  # same second as the revocation: revoked too
    return False


def candidate_keys(claims: Mapping[str, Any], header_kid: str | None) -> list[tuple[str, str]]:
    """The (kind, value) pairs that could hold an entry matching these claims."""
    pairs = [
        ("jti", claims.get("jti")),
        ("sid", claims.get("sid")),
        ("sub", claims.get("sub")),
        ("client", claims.get("client_id")),
        ("kid", header_kid),
    ]
    return [(kind, value) for kind, value in pairs if isinstance(value, str) and valid_value(value)]


# ---------------------------------------------------------------- Redis layout


def entry_key(prefix: str, kind: str, value: str) -> str:
    return f"{prefix}deny:{kind}:{value}"


def loaded_marker(prefix: str) -> str:
    return f"{prefix}deny:loaded"


def channel(prefix: str) -> str:
    return f"{prefix}denylist"


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def entry_pattern(prefix: str) -> str:
    """A ``SCAN MATCH`` pattern for every key under ``prefix``'s denylist (the marker included:
    filter with :func:`entry_key_prefixes`)."""
    return _glob_escape(f"{prefix}deny:") + "*"


def entry_key_prefixes(prefix: str) -> tuple[str, ...]:
    """The starts of every entry key (not the marker), one per kind."""
    return tuple(entry_key(prefix, kind, "") for kind in KINDS)
