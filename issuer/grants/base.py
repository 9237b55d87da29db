"""What every grant receives and returns; shared scope rules."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from issuer.clients import ClientRecord
from issuer.errors import UnauthorizedClient
from issuer.settings import Settings
from issuer.signin.idtoken import IdTokens
from issuer.store.database import Database
from issuer.store.refresh import LoginStore, Outcome
from issuer.store.signin import CodeStore, SessionStore
from issuer.tokens import AccessTokenMinter, RefreshTokens, parse_scope, scope_within
from issuer.users import UserDirectory

__all__ = [
    "CodeReplayed",
    "FamilyRevoked",
    "GrantContext",
    "ReadyCheck",
    "SessionCheck",
    "TokenRequest",
    "TokenResponse",
    "grant_scope",
]

# Called after a family was revoked for reuse: (family_id, subject, client_id, family_expires_at).
FamilyRevoked = Callable[[str, str, str, int], Awaitable[None]]
# Called before a refresh issues tokens: (family_id, subject, client_id, family_created_at); raises
# InvalidGrant when the login is revoked elsewhere (the denylist), TemporarilyUnavailable when unknown.
SessionCheck = Callable[[str, str, str, int], Awaitable[None]]
# Called after a spent authorization code was presented again: (family_id of its first use or
# None, subject, client_id); revokes what that use issued (RFC 6749 4.1.2, RFC 9700 4.2.4).
CodeReplayed = Callable[[str | None, str, str], Awaitable[None]]
# Called before a refresh token is spent: raises TemporarilyUnavailable when a session check
# could not be made now (so that an outage never consumes the client's token).
ReadyCheck = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A parsed, client-authenticated token request: HTTP is already gone."""

    client: ClientRecord
    params: Mapping[str, str]
    address: str | None

    def require(self, name: str) -> str:
        from issuer.errors import InvalidRequest

        value = self.params.get(name)
        if not value:
            raise InvalidRequest(f"missing parameter: {name}")
        return value


@dataclass(slots=True)
class GrantContext:
    settings: Settings
    db: Database
    minter: AccessTokenMinter
    refresh_tokens: RefreshTokens
    refresh_store: LoginStore
    users: UserDirectory
    codes: CodeStore = field(default_factory=CodeStore)
    browser_sessions: SessionStore = field(default_factory=SessionStore)
    id_tokens: IdTokens | None = None  # OpenID Connect: the code exchange adds an id_token
    on_code_replayed: list[CodeReplayed] = field(default_factory=list)
    on_family_revoked: list[FamilyRevoked] = field(default_factory=list)
    session_checks: list[SessionCheck] = field(default_factory=list)
    ready_checks: list[ReadyCheck] = field(default_factory=list)
    refresh_outcomes: Counter[Outcome] = field(default_factory=Counter)  # a metric: one increment each
    clock: Callable[[], float] = time.time

    def access_ttl(self, client: ClientRecord) -> int:
        return client.access_token_ttl or self.settings.access_token_ttl


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """RFC 6749 5.1 successful response."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    id_token: str | None = None  # OpenID Connect Core 3.1.3.3

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if self.scope:
            body["scope"] = self.scope
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        if self.id_token is not None:
            body["id_token"] = self.id_token
        return body


def require_grant(client: ClientRecord, grant_type: str) -> None:
    if grant_type not in client.grant_types:
        raise UnauthorizedClient(f"this client is not registered for the {grant_type} grant")


def grant_scope(requested: str | None, ceiling: frozenset[str]) -> str:
    """RFC 6749 3.3: the requested scope if within ``ceiling``; absent means all of it."""
    return scope_within(parse_scope(requested), ceiling)
