"""The browser origins allowed to call the token-side endpoints with CORS (Fetch standard,
"CORS protocol"): the origins (RFC 6454 4) of the ``http(s)`` redirect URIs registered by
enabled public clients.

- ``https://app.example/cb`` allows exactly ``https://app.example``; ``https://app.example:8443/cb``
  allows ``https://app.example:8443`` (a default port is left out, as browsers send it).
- A loopback redirect URI (``http://127.0.0.1/cb``, ``http://[::1]/cb``, ``http://localhost/cb``)
  allows its host on any port, as the redirect itself matches on any port (RFC 8252 7.3).
- Confidential clients' redirect URIs allow nothing: a confidential client calls ``/token`` from
  its server, and its origin gains nothing from reading our answers in a browser. Private-use
  schemes (``com.example.app:/cb``) have no web origin.

The set is read with one query (:meth:`issuer.store.clients.ClientStore.public_redirect_uris`)
and kept for ``ISSUER_CLIENT_CACHE_TTL`` seconds, the time every other client change takes to
reach every instance; a change made through this process's
:class:`~issuer.clients.ClientDirectory` rebuilds it on the next request. A request without an
``Origin`` header (every server-to-server call) never reaches this module.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from issuer.clients import ClientDirectory
from issuer.signin.redirects import LOOPBACK_HOSTS

__all__ = ["AllowedOrigins", "OriginSet", "origin_of", "parse_origin"]

_DEFAULT_PORTS = {"https": 443, "http": 80}
# RFC 6454 6.2 serialisation as browsers send it: lower-case scheme and host, a port only when
# not the default. Anything else (``null``, paths, user information, upper case) is no origin.
_ORIGIN = re.compile(r"(https?)://([a-z0-9.\-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.ASCII)


def parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of a serialised origin (host without brackets), or None."""
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme, host, port = match.group(1), match.group(2).strip("[]"), match.group(3)
    number = int(port) if port is not None else None
    if number is not None and (not 0 < number < 65536 or number == _DEFAULT_PORTS[scheme]):
        return None  # a browser never writes the default port
    return scheme, host, number


def origin_of(uri: str) -> str | None:
    """The serialised origin of an ``http(s)`` URI, or None (another scheme, unparseable)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme not in _DEFAULT_PORTS or not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{shown}"
    return f"{parts.scheme}://{shown}:{port}"


@dataclass(frozen=True, slots=True)
class OriginSet:
    """Exact origins, and the loopback hosts whose every port is allowed."""

    exact: frozenset[str]
    loopback_hosts: frozenset[str]

    @classmethod
    def from_redirect_uris(cls, uris: Iterable[str]) -> OriginSet:
        exact: set[str] = set()
        loopback: set[str] = set()
        for uri in uris:
            origin = origin_of(uri)
            if origin is None:
                continue
            parsed = parse_origin(origin)
            if parsed is not None and parsed[0] == "http" and parsed[1] in LOOPBACK_HOSTS:
                loopback.add(parsed[1])  # RFC 8252 7.3: any port
            else:
                exact.add(origin)
        return cls(frozenset(exact), frozenset(loopback))

    def allows(self, origin: str) -> bool:
        if origin in self.exact:
            return True
        if not self.loopback_hosts:
            return False
        parsed = parse_origin(origin)
        return parsed is not None and parsed[0] == "http" and parsed[1] in self.loopback_hosts


class AllowedOrigins:
    """The current :class:`OriginSet`, rebuilt at most once per ``ttl`` seconds (and at once after
    a change through ``clients``); concurrent requests share one rebuild."""

    def __init__(
        self, clients: ClientDirectory, *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clients = clients
        self.ttl = ttl
        self._clock = clock
        self._set = OriginSet(frozenset(), frozenset())
        self._until = -1.0
        self._seen_changes = -1
        self._lock = asyncio.Lock()
        self.loads = 0  # queries made (a test and metric hook)

    def _stale(self) -> bool:
        return self._clock() >= self._until or self._seen_changes != self.clients.changes

    async def allows(self, origin: str) -> bool:
        if self._stale():
            async with self._lock:
                if self._stale():
                    changes = self.clients.changes
                    async with self.clients.db.transaction() as conn:
                        uris = await self.clients.store.public_redirect_uris(conn)
                    self._set = OriginSet.from_redirect_uris(uri for row in uris for uri in row.split())
                    self._until, self._seen_changes = self._clock() + self.ttl, changes
                    self.loads += 1
        return self._set.allows(origin)
