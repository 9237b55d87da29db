"""What an authorization request needs next: a login, a consent, or its code (no HTTP here).

- **Login** (OpenID Connect Core 3.1.2.3) when the browser has no live session, when
  ``prompt=login`` asks for one (once: the login made for this request satisfies it, see
  :meth:`issuer.store.signin.RequestStore.login_done`), when ``max_age`` has passed since the
  session's ``auth_time``, or when the session's user has been disabled.
- **Consent** for a client that is not first-party, when a requested scope has not been granted
  to it by this user, or always with ``prompt=consent``.
- ``prompt=none``: the user may not be shown anything, so a needed login is ``login_required``
  and a needed consent ``consent_required`` (OpenID Connect Core 3.1.2.6).

And the authorization response's URI (RFC 6749 4.1.2, RFC 9207): parameters added to the
redirect URI's query, which is kept as registered (RFC 6749 3.1.2).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode, urlsplit

from issuer.clients import ClientRecord
from issuer.store.signin import StoredRequest, StoredSession

__all__ = ["Step", "consent_scopes", "login_needed", "next_step", "response_uri"]


class Step(enum.Enum):
    LOGIN = "login"
    CONSENT = "consent"
    CODE = "code"
    LOGIN_REQUIRED = "login_required"  # prompt=none, and a login is needed
    CONSENT_REQUIRED = "consent_required"  # prompt=none, and a consent is needed


def login_needed(
    request: StoredRequest, session: StoredSession | None, now: int, *, subject_enabled: bool
) -> bool:
    if session is None or not session.live_at(now) or not subject_enabled:
        return True
    if "login" in request.prompts:
        return True
    return request.max_age is not None and now - session.auth_time > request.max_age


def consent_scopes(request: StoredRequest, client: ClientRecord, granted: Iterable[str]) -> list[str]:
    """The scopes the consent page must ask for ([] when none is needed)."""
    if client.first_party:
        return []
    asked = request.scope.split()
    if "consent" in request.prompts:
        return asked
    have = set(granted)
    return [scope for scope in asked if scope not in have]


def next_step(
    request: StoredRequest,
    client: ClientRecord,
    session: StoredSession | None,
    granted: Iterable[str],
    now: int,
    *,
    subject_enabled: bool,
    consented: bool = False,
) -> Step:
    silent = "none" in request.prompts
    if login_needed(request, session, now, subject_enabled=subject_enabled):
        return Step.LOGIN_REQUIRED if silent else Step.LOGIN
    if not consented and consent_scopes(request, client, granted):
        return Step.CONSENT_REQUIRED if silent else Step.CONSENT
    return Step.CODE


def response_uri(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """``redirect_uri`` with ``params`` (those not None) added to its query, which is kept."""
    query = urlencode({name: value for name, value in params.items() if value is not None})
    if not query:
        return redirect_uri
    if not urlsplit(redirect_uri).query:
        return f"{redirect_uri.rstrip('?')}?{query}"
    return f"{redirect_uri}&{query}"
