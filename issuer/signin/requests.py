"""Validating an authorization request (RFC 6749 4.1.1, RFC 7636 4.3, OpenID Connect Core 3.1.2.1).

The order matters (RFC 6749 4.1.2.1): the client and its redirect URI are checked first, and a
failure there is :class:`PageError` (an HTML error page, never a redirect: the issuer must not
send anything to a URI it cannot vouch for). Only then may errors go back to the client, as
:class:`RedirectError` (``error``, ``error_description``, ``state``, ``iss``, RFC 9207).

No HTTP here: the caller passes the parameters (and the names that came more than once) and the
client record it looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from issuer.clients import ClientRecord
from issuer.signin import redirects
from issuer.signin.pkce import PKCEError, check_challenge

__all__ = ["PROMPTS", "Checked", "PageError", "RedirectError", "validate"]

PROMPTS = frozenset({"none", "login", "consent"})
MAX_STATE = 2000  # state and nonce are echoed; bounded so that a request row stays small
MAX_NONCE = 500
MAX_LOGIN_HINT = 200
MAX_MAX_AGE_DIGITS = 10

Refuse = Callable[[str, str], "RedirectError"]


class PageError(Exception):
    """Unknown client or unusable redirect URI: the browser gets an error page (status 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RedirectError(Exception):
    """An error the client is told about at its (verified) redirect URI."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.redirect_uri = redirect_uri
        self.state = state
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid authorization request: everything the pending request row keeps."""

    client_id: str
    redirect_uri: str  # as sent (the registered one when it was omitted)
    scope: str
    state: str | None
    code_challenge: str
    nonce: str | None
    prompt: str | None
    max_age: int | None
    login_hint: str | None


def check_client(client_id: str | None, client: ClientRecord | None) -> ClientRecord:
    if not client_id:
        raise PageError("The request names no client (client_id is missing).")
    if client is None or client.disabled:
        raise PageError("The application that sent you here is not known to this server.")
    if "authorization_code" not in client.grant_types:
        raise PageError("The application that sent you here may not sign users in this way.")
    return client


def check_redirect(client: ClientRecord, requested: str | None) -> str:
    """The redirect URI to answer at: the one sent, if it matches a registered one; when none was
    sent, the only registered one (RFC 6749 3.1.2.3: it may be omitted only then)."""
    if requested is None:
        if len(client.redirect_uris) == 1:
            return client.redirect_uris[0]
        raise PageError("The request names no redirect_uri, and the application has several.")
    if redirects.matches(requested, client.redirect_uris) is None:
        raise PageError("The redirect_uri of this request is not registered for the application.")
    return requested


def validate(params: Mapping[str, str], repeated: set[str], client: ClientRecord | None) -> Checked:
    """The checked request, or :class:`PageError` / :class:`RedirectError`."""
    if "client_id" in repeated or "redirect_uri" in repeated:
        raise PageError("client_id and redirect_uri may each be sent only once.")
    client = check_client(params.get("client_id"), client)
    redirect_uri = check_redirect(client, params.get("redirect_uri"))
    state = params.get("state")
    if state is not None and len(state) > MAX_STATE:
        state = None  # not echoed: an oversized state is refused below without being sent back

    def refuse(error: str, description: str) -> RedirectError:
        return RedirectError(redirect_uri, state, error, description)

    if "state" in params and state is None:
        raise refuse("invalid_request", f"state is longer than {MAX_STATE} characters")
    if repeated:
        raise refuse("invalid_request", f"parameter {sorted(repeated)[0][:40]!r} is repeated")
    response_type = params.get("response_type")
    if response_type is None:
        raise refuse("invalid_request", "missing parameter: response_type")
    if response_type != "code":
        raise refuse("unsupported_response_type", "only response_type=code is supported")
    try:
        challenge = check_challenge(params.get("code_challenge"), params.get("code_challenge_method"))
    except PKCEError as error:
        raise refuse("invalid_request", str(error)) from None
    scope = _scope(params.get("scope"), client, refuse)
    prompt = _prompt(params.get("prompt"), refuse)
    max_age = _max_age(params.get("max_age"), refuse)
    nonce = params.get("nonce")
    if nonce is not None and len(nonce) > MAX_NONCE:
        raise refuse("invalid_request", f"nonce is longer than {MAX_NONCE} characters")
    login_hint = params.get("login_hint")
    if login_hint is not None and len(login_hint) > MAX_LOGIN_HINT:
        login_hint = None  # a hint only: an unusable one is ignored
    return Checked(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=state,
        code_challenge=challenge,
        nonce=nonce,
        prompt=prompt,
        max_age=max_age,
        login_hint=login_hint,
    )


def _scope(value: str | None, client: ClientRecord, refuse: Refuse) -> str:
    if value is None:
        return " ".join(sorted(client.scopes))  # absent: every scope of the client
    asked = value.split(" ")
    if any(not scope for scope in asked):
        raise refuse("invalid_scope", "scope is a list of scope tokens separated by single spaces")
    unknown = sorted(set(asked) - client.scopes)
    if unknown:
        raise refuse("invalid_scope", f"scope {unknown[0][:40]!r} is not allowed for this client")
    return " ".join(sorted(set(asked)))


def _prompt(value: str | None, refuse: Refuse) -> str | None:
    if value is None:
        return None
    values = value.split(" ")
    unknown = sorted(set(values) - PROMPTS)
    if unknown or len(set(values)) != len(values):
        what = unknown[0][:40] if unknown else value[:40]
        raise refuse("invalid_request", f"prompt {what!r} is not supported (none, login, consent)")
    if "none" in values and len(values) > 1:
        raise refuse("invalid_request", "prompt=none may not be combined with other values")
    return " ".join(sorted(values))


def _max_age(value: str | None, refuse: Refuse) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > MAX_MAX_AGE_DIGITS:
        raise refuse("invalid_request", "max_age is a non-negative integer (seconds)")
    return int(value)
