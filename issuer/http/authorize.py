"""The authorization endpoint and the pages behind it (RFC 6749 4.1, OpenID Connect Core 3.1).

``GET|POST /authorize`` validates the request (:mod:`issuer.signin.requests`), keeps it
server-side under a random id bound to the browser's ``__Host-issuer-request`` cookie, and goes
on as :mod:`issuer.signin.flow` decides: to ``/login``, to ``/consent``, or straight back to the
client with a code (single sign-on). The pages' POSTs check the form's CSRF token first (nothing
else happens without it) and answer with a 303. The authorization endpoint sends no CORS headers.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post, route
from litestar.response import Template

from issuer.clients import ClientRecord
from issuer.errors import Overloaded, RateLimited
from issuer.http.forms import read_form
from issuer.http.pages import (
    REQUEST_COOKIE,
    SESSION_COOKIE,
    binding_of,
    cookie,
    error_page,
    page,
    redirect,
    set_cookie,
)
from issuer.runtime import Runtime
from issuer.signin import flow, requests
from issuer.signin.codes import digest, new_code, new_secret
from issuer.store.signin import StoredRequest, StoredSession

__all__ = ["authorize", "consent_form", "consent_post", "login_form", "login_post"]

log = logging.getLogger("issuer.signin")

SESSION_ID_PREFIX = "bs_"
EXPIRED = (
    "This sign-in request has expired or was started in another browser. "
    "Go back to the application and sign in again."
)
FORGED = "This form has expired or was not sent from this browser. Go back and try again."
WRONG_PASSWORD = "Wrong username or password."


def _runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _now(runtime: Runtime) -> int:
    return int(runtime.clock())


async def _client(runtime: Runtime, client_id: str | None) -> ClientRecord | None:
    if not client_id or len(client_id) > 64:
        return None
    return await runtime.clients.get(client_id)


async def live_session(runtime: Runtime, request: Request[Any, Any, Any]) -> StoredSession | None:
    value = cookie(request, SESSION_COOKIE)
    if value is None:
        return None
    async with runtime.db.transaction() as conn:
        return await runtime.browser_sessions.live(conn, digest(value), _now(runtime))


async def _pending(runtime: Runtime, request_id: str | None, binding: str | None) -> StoredRequest | None:
    if not request_id or not binding or len(request_id) > 64:
        return None
    async with runtime.db.transaction() as conn:
        return await runtime.authorization_requests.get(conn, request_id, digest(binding), _now(runtime))


def answer(runtime: Runtime, pending: StoredRequest, **params: str | None) -> Response[bytes]:
    """The authorization response at the client's redirect URI, with ``state`` and ``iss``."""
    return redirect(
        flow.response_uri(
            pending.redirect_uri, {**params, "state": pending.state, "iss": runtime.settings.url}
        )
    )


async def _refuse(
    runtime: Runtime, pending: StoredRequest, error: str, description: str, *, stored: bool
) -> Response[bytes]:
    if stored:
        async with runtime.db.transaction() as conn:
            await runtime.authorization_requests.delete(conn, pending.id)
    return answer(runtime, pending, error=error, error_description=description)


async def proceed(
    runtime: Runtime,
    pending: StoredRequest,
    session: StoredSession | None,
    *,
    consented: bool = False,
    stored: bool = True,
) -> Response[bytes] | Template:
    """The next step of a pending request: the login page, the consent page, or the code.

    ``stored=False`` is a request straight from ``/authorize``, not yet in the database: it is
    stored only when a page must come (single sign-on answers without writing it)."""
    client = await _client(runtime, pending.client_id)
    if client is None or client.disabled:
        return error_page("The application that sent you here is no longer available.")
    now = _now(runtime)
    enabled, granted = False, set[str]()
    if session is not None:
        async with runtime.db.transaction() as conn:
            user = await runtime.users.store.by_id(conn, session.subject)
            enabled = user is not None and user.disabled_at is None
            if enabled and not client.first_party:
                granted = await runtime.consents.granted(conn, session.subject, client.client_id)
    step = flow.next_step(
        pending, client, session, granted, now, subject_enabled=enabled, consented=consented
    )
    if step is flow.Step.LOGIN_REQUIRED:
        return await _refuse(runtime, pending, "login_required", "the user is not signed in", stored=stored)
    if step is flow.Step.CONSENT_REQUIRED:
        return await _refuse(
            runtime, pending, "consent_required", "the user has not consented", stored=stored
        )
    if step is flow.Step.CODE:
        assert session is not None
        return await issue_code(runtime, pending, session, now, stored=stored)
    if not stored:
        async with runtime.db.transaction() as conn:
            await runtime.authorization_requests.create(conn, pending)
    page = "login" if step is flow.Step.LOGIN else "consent"
    return redirect(f"/{page}?request={quote(pending.id)}")


async def issue_code(
    runtime: Runtime, pending: StoredRequest, session: StoredSession, now: int, *, stored: bool = True
) -> Response[bytes] | Template:
    """RFC 6749 4.1.2: a one-time code bound to everything the exchange checks; a stored pending
    request is spent in the same transaction (a second submit finds nothing)."""
    code = new_code()
    settings = runtime.settings
    async with runtime.db.transaction() as conn:
        if stored and not await runtime.authorization_requests.delete(conn, pending.id):
            return error_page(EXPIRED)  # spent by a concurrent submit: that one got the code
        if not await runtime.browser_sessions.touch(
            conn, session.digest, now, settings.browser_session_idle_ttl
        ):
            return error_page(EXPIRED)
        await runtime.codes.create(
            conn,
            digest=digest(code),
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            code_challenge=pending.code_challenge,
            scope=pending.scope,
            nonce=pending.nonce,
            session_id=session.id,
            subject=session.subject,
            auth_time=session.auth_time,
            now=now,
            ttl=settings.authorization_code_ttl,
        )
    log.info("authorization code issued", extra={"client_id": pending.client_id, "subject": session.subject})
    return answer(runtime, pending, code=code)


PRUNE_INTERVAL = 1  # seconds between two prunes by one process
PRUNE_LIMIT = 1000  # rows per table and prune: well above what one process signs in per second


async def _prune(runtime: Runtime, now: int) -> None:
    """Expired pending requests and codes go on the write path, a bounded batch at a time, at
    most once a second per process (not on every request: a busy /authorize would spend two
    statements and a transaction per request finding nothing)."""
    if now < runtime.signin_prune_due:
        return
    runtime.signin_prune_due = now + PRUNE_INTERVAL
    async with runtime.db.transaction() as conn:
        await runtime.authorization_requests.prune(conn, now, limit=PRUNE_LIMIT)
        await runtime.codes.prune(conn, now, limit=PRUNE_LIMIT)


def _query(request: Request[Any, Any, Any]) -> tuple[dict[str, str], set[str]]:
    params: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name in params:
            repeated.add(name)
        elif value:  # RFC 6749 3.1: a parameter without a value is omitted
            params[name] = value
    return params, repeated


@route("/authorize", http_method=["GET", "POST"], include_in_schema=False)
async def authorize(request: Request[Any, Any, Any]) -> Response[bytes] | Template:
    """RFC 6749 4.1.1: GET, or a form POST (a repeated parameter in a POST body is an error page:
    the form parser refuses the body before the client is known)."""
    runtime = _runtime(request)
    if request.method == "POST":
        params, repeated = await read_form(request), set[str]()
    else:
        params, repeated = _query(request)
    try:
        checked = requests.validate(params, repeated, await _client(runtime, params.get("client_id")))
    except requests.PageError as error:
        return error_page(error.message)
    except requests.RedirectError as error:
        return redirect(
            flow.response_uri(
                error.redirect_uri,
                {
                    "error": error.error,
                    "error_description": error.description,
                    "state": error.state,
                    "iss": runtime.settings.url,
                },
            )
        )
    binding = binding_of(request)
    now = _now(runtime)
    ttl = runtime.settings.authorization_request_ttl
    pending = StoredRequest(
        id=secrets.token_urlsafe(24),
        binding_digest=digest(binding),
        client_id=checked.client_id,
        redirect_uri=checked.redirect_uri,
        scope=checked.scope,
        state=checked.state,
        code_challenge=checked.code_challenge,
        nonce=checked.nonce,
        prompt=checked.prompt,
        max_age=checked.max_age,
        login_hint=checked.login_hint,
        created_at=now,
        expires_at=now + ttl,
    )
    await _prune(runtime, now)
    response = await proceed(runtime, pending, await live_session(runtime, request), stored=False)
    set_cookie(response, REQUEST_COOKIE, binding, ttl)
    return response


def _login_page(
    runtime: Runtime,
    request: Request[Any, Any, Any],
    pending: StoredRequest,
    client: ClientRecord,
    *,
    username: str | None,
    message: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Template:
    binding = cookie(request, REQUEST_COOKIE) or ""
    return page(
        "login.html",
        {
            "client_name": client.name,
            "request_id": pending.id,
            "csrf": runtime.csrf.token("login", binding),
            "username": username,
            "message": message,
        },
        status=status,
        form_targets=[pending.redirect_uri],
        headers=headers,
    )


@get("/login", include_in_schema=False)
async def login_form(request: Request[Any, Any, Any]) -> Template:
    runtime = _runtime(request)
    pending = await _pending(runtime, request.query_params.get("request"), cookie(request, REQUEST_COOKIE))
    client = await _client(runtime, pending.client_id) if pending else None
    if pending is None or client is None or client.disabled:
        return error_page(EXPIRED)
    return _login_page(runtime, request, pending, client, username=pending.login_hint)


def _note_login(runtime: Runtime, outcome: str, client_id: str, subject: str | None = None) -> None:
    runtime.login_outcomes[outcome] = runtime.login_outcomes.get(outcome, 0) + 1
    log.info("login", extra={"outcome": outcome, "client_id": client_id, "subject": subject})


@post("/login", include_in_schema=False)
async def login_post(request: Request[Any, Any, Any]) -> Response[bytes] | Template:
    runtime = _runtime(request)
    form = await read_form(request)
    binding = cookie(request, REQUEST_COOKIE)
    if not runtime.csrf.check("login", binding, form.get("csrf")):
        return error_page(FORGED, 403)  # login CSRF: nothing else happens
    pending = await _pending(runtime, form.get("request"), binding)
    client = await _client(runtime, pending.client_id) if pending else None
    if pending is None or client is None or client.disabled:
        return error_page(EXPIRED)
    username, password = form.get("username", ""), form.get("password", "")
    address = request.client.host if request.client else None
    try:
        # the password limits of /token, before the argon2 work
        await runtime.rate_limits.password_attempt(client.client_id, username, address)
        login = await runtime.users.login(username, password)
    except (RateLimited, Overloaded) as error:
        _note_login(runtime, "rate_limited", client.client_id)
        return _login_page(
            runtime,
            request,
            pending,
            client,
            username=username or None,
            message="Too many attempts. Please wait a moment and try again.",
            status=error.status,
            headers={"Retry-After": str(error.retry_after)},
        )
    if login is None:
        _note_login(runtime, "failed", client.client_id)
        return _login_page(
            runtime, request, pending, client, username=username or None, message=WRONG_PASSWORD
        )
    old = await live_session(runtime, request)
    if old is not None and old.subject != login.subject:
        # another user's session in this browser ends before this one starts
        await runtime.revocation.end_browser_session(
            old.id, reason="replaced", actor=f"user:{login.subject}", address=address
        )
    secret = new_secret()  # always a fresh session id after a password (no session fixation)
    now = _now(runtime)
    settings = runtime.settings
    async with runtime.db.transaction() as conn:
        if not await runtime.users.confirm(conn, login):  # changed or disabled meanwhile
            _note_login(runtime, "failed", client.client_id)
            return _login_page(runtime, request, pending, client, username=username, message=WRONG_PASSWORD)
        session = await runtime.browser_sessions.create(
            conn,
            digest=digest(secret),
            session_id=SESSION_ID_PREFIX + secrets.token_urlsafe(16),
            subject=login.subject,
            auth_time=now,
            now=now,
            idle_ttl=settings.browser_session_idle_ttl,
            absolute_ttl=settings.browser_session_absolute_ttl,
        )
        pending = await runtime.authorization_requests.login_done(conn, pending)
    _note_login(runtime, "ok", client.client_id, login.subject)
    response = await proceed(runtime, pending, session)
    set_cookie(response, SESSION_COOKIE, secret, settings.browser_session_absolute_ttl)
    return response


@get("/consent", include_in_schema=False)
async def consent_form(request: Request[Any, Any, Any]) -> Response[bytes] | Template:
    runtime = _runtime(request)
    binding = cookie(request, REQUEST_COOKIE)
    pending = await _pending(runtime, request.query_params.get("request"), binding)
    client = await _client(runtime, pending.client_id) if pending else None
    if pending is None or client is None or client.disabled or binding is None:
        return error_page(EXPIRED)
    session = await live_session(runtime, request)
    if session is None:
        return redirect(f"/login?request={quote(pending.id)}")
    async with runtime.db.transaction() as conn:
        granted = await runtime.consents.granted(conn, session.subject, client.client_id)
    scopes = flow.consent_scopes(pending, client, granted) or pending.scope.split()
    return page(
        "consent.html",
        {
            "client_name": client.name,
            "scopes": scopes,
            "request_id": pending.id,
            "csrf": runtime.csrf.token("consent", binding),
        },
        form_targets=[pending.redirect_uri],
    )


@post("/consent", include_in_schema=False)
async def consent_post(request: Request[Any, Any, Any]) -> Response[bytes] | Template:
    runtime = _runtime(request)
    form = await read_form(request)
    binding = cookie(request, REQUEST_COOKIE)
    if not runtime.csrf.check("consent", binding, form.get("csrf")):
        return error_page(FORGED, 403)
    pending = await _pending(runtime, form.get("request"), binding)
    if pending is None:
        return error_page(EXPIRED)
    decision = form.get("decision")
    if decision not in ("allow", "deny"):
        return error_page("Choose Allow or Deny.")
    session = await live_session(runtime, request)
    if session is None:
        return redirect(f"/login?request={quote(pending.id)}")
    if decision == "deny":
        log.info("consent denied", extra={"client_id": pending.client_id, "subject": session.subject})
        return await _refuse(runtime, pending, "access_denied", "the user denied the request", stored=True)
    async with runtime.db.transaction() as conn:
        await runtime.consents.grant(
            conn, session.subject, pending.client_id, pending.scope.split(), _now(runtime)
        )
    return await proceed(runtime, pending, session, consented=True)
