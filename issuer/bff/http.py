"""The BFF's own endpoints (fixed names): ``GET /bff/login``, ``GET /bff/callback``,
``GET /bff/user``, ``POST /bff/logout``.

- Login (RFC 6749 4.1.1, RFC 7636, OpenID Connect Core 3.1.2.1): ``state``, ``nonce`` and the
  PKCE verifier are 256-bit random values, sealed with ``return_to`` into the ``__Host-bff-login``
  cookie (HttpOnly, Secure, SameSite=Lax so that it comes back on the issuer's redirect, Path=/,
  ``BFF_LOGIN_TTL``).
- Callback: the ``state`` must match the cookie's (RFC 6749 10.12), ``iss`` the issuer (RFC 9207);
  the code is exchanged with ``client_secret_basic``, the id_token validated
  (:meth:`IssuerClient.validate_id_token`); then a new session (a new id: no fixation; a session
  the browser already had is deleted) and a 303 to ``return_to``.
- The session cookie ``__Host-bff-session``: HttpOnly, Secure, SameSite=Strict, Path=/, no Domain.
- ``POST /bff/logout`` needs ``X-CSRF: 1`` (403 without: a cross-site form cannot set it), or,
  for a form on the BFF's own pages, ``Origin`` equal to ``BFF_URL`` (:func:`same_origin_form`); it
  revokes the refresh token at the issuer (RFC 7009), deletes the session and clears the cookie;
  ``?global=1`` answers 303 to the issuer's ``end_session_endpoint`` (OpenID Connect
  RP-Initiated Logout 1.0) with ``id_token_hint`` and, if configured, ``post_logout_redirect_uri``.

Every answer is ``Cache-Control: no-store``; none carries a token, except the id_token in the
global logout's redirect, which RP-Initiated Logout puts there (it is not a bearer credential for
any API: its ``aud`` is the BFF).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from typing import Any, Literal
from urllib.parse import urlencode

import jwt
from litestar import Request, Response, get, post
from litestar.response import Redirect
from prometheus_client import CONTENT_TYPE_LATEST

from issuer.bff.oidc import IssuerUnavailable, LoginFailed
from issuer.bff.redirects import safe_return_to
from issuer.bff.runtime import LOGIN_COOKIE, MAX_COOKIE, SESSION_COOKIE, BffRuntime
from issuer.bff.sessions import LoginState, Session, Tokens, digest, new_session_id
from issuer.signin.pkce import s256

__all__ = ["HANDLERS", "callback", "csrf_ok", "json_error", "login", "logout", "metrics", "no_store", "user"]

log = logging.getLogger("issuer.bff")

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


def runtime_of(request: Request[Any, Any, Any]) -> BffRuntime:
    bff: BffRuntime = request.app.state.bff
    return bff


def csrf_ok(request: Request[Any, Any, Any]) -> bool:
    """The required custom header: a cross-site simple request (form, link, image) cannot set it,
    and a cross-site fetch that sets it needs a CORS preflight the BFF never grants."""
    return request.headers.get("x-csrf") == "1"


def same_origin_form(request: Request[Any, Any, Any], origin: str) -> bool:
    """A form POST from the BFF's own pages: ``Origin`` is exactly ``BFF_URL`` (browsers send it
    on every POST and a page cannot forge it; OWASP CSRF cheat sheet, "verifying origin with
    standard headers"). Accepted for ``POST /bff/logout`` only, so that ``?global=1`` can be a
    top-level navigation (a ``fetch`` cannot follow the redirect to the issuer's page)."""
    return request.headers.get("origin") == origin


def json_error(status: int, error: str, description: str) -> Response[Any]:
    return Response({"error": error, "error_description": description}, status_code=status, headers=NO_STORE)


def no_store(response: Response[Any]) -> Response[Any]:
    response.headers.update(NO_STORE)
    return response


def _cookie(
    response: Response[Any], name: str, value: str, max_age: int, samesite: Literal["lax", "strict"]
) -> None:
    """A ``__Host-`` cookie: Secure, Path=/, no Domain (RFC 6265bis 4.1.3.2); HttpOnly."""
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite=samesite)


def set_session_cookie(response: Response[Any], value: str, max_age: int) -> None:
    _cookie(response, SESSION_COOKIE, value, max_age, "strict")


def clear_session_cookie(response: Response[Any]) -> None:
    _cookie(response, SESSION_COOKIE, "", 0, "strict")


def _set_login_cookie(response: Response[Any], value: str, max_age: int) -> None:
    _cookie(response, LOGIN_COOKIE, value, max_age, "lax")


def _clear_login_cookie(response: Response[Any]) -> None:
    _cookie(response, LOGIN_COOKIE, "", 0, "lax")


@get("/bff/login", include_in_schema=False)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    bff = runtime_of(request)
    return_to = safe_return_to(request.query_params.get("return_to"))
    if return_to is None:
        return json_error(400, "invalid_request", "return_to must be a path on this site")
    verifier = secrets.token_urlsafe(48)  # RFC 7636 4.1: 64 characters of the unreserved set
    state = LoginState(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=verifier,
        return_to=return_to,
        expires_at=int(time.time()) + bff.settings.login_ttl,
    )
    try:
        target = await bff.issuer.authorization_url(
            state=state.state, nonce=state.nonce, challenge=s256(verifier)
        )
    except IssuerUnavailable as error:
        log.warning("bff login: issuer unavailable", extra={"detail": str(error)})
        return json_error(502, "temporarily_unavailable", "the sign-in service cannot be reached")
    response: Response[Any] = Redirect(target, status_code=303)
    _set_login_cookie(response, bff.sealer.seal_login(state), bff.settings.login_ttl)
    return no_store(response)


def _failed(status: int, error: str, description: str) -> Response[Any]:
    response = json_error(status, error, description)
    _clear_login_cookie(response)
    return response


def _family_sid(access_token: str) -> str | None:
    """The refresh family of an access token (its ``sid`` claim), recorded to follow revocations.
    Read without verification: the token came straight from the issuer's token endpoint."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sid = claims.get("sid")
    return sid if isinstance(sid, str) else None


@get("/bff/callback", include_in_schema=False)
async def callback(request: Request[Any, Any, Any]) -> Response[Any]:
    bff = runtime_of(request)
    now = int(time.time())
    raw = request.cookies.get(LOGIN_COOKIE)
    state = bff.sealer.open_login(raw, now) if raw and len(raw) <= 2048 else None
    params = request.query_params
    if state is None:
        return _failed(400, "invalid_request", "no sign-in is in progress in this browser (or it expired)")
    # RFC 6749 10.12: the state binds the answer to the login this browser started.
    if not hmac.compare_digest(params.get("state", "").encode(), state.state.encode()):
        return _failed(400, "invalid_request", "the state does not match this browser's sign-in")
    issuer = params.get("iss")
    if issuer is not None and issuer != bff.settings.issuer_url:  # RFC 9207 2.4
        return _failed(400, "invalid_request", "the answer comes from another issuer")
    try:
        endpoints = await bff.issuer.endpoints()
    except IssuerUnavailable:
        return _failed(502, "temporarily_unavailable", "the sign-in service cannot be reached")
    if issuer is None and endpoints.iss_parameter:  # RFC 9207 2.4: it MUST then be there
        return _failed(400, "invalid_request", "the answer does not name its issuer (iss)")
    if "error" in params:
        code = params["error"] if _ERROR_CODE.fullmatch(params["error"]) else "server_error"
        return _failed(400, code, "the sign-in did not complete")
    code = params.get("code")
    if not code or len(code) > 512:
        return _failed(400, "invalid_request", "the answer has no code")
    try:
        answer = await bff.issuer.exchange(code, state.verifier)
        if answer.id_token is None:
            raise LoginFailed("the issuer sent no id_token (is openid in BFF_SCOPE and the client's scope?)")
        claims = await bff.issuer.validate_id_token(answer.id_token, state.nonce)
    except LoginFailed as error:
        log.warning("bff login failed", extra={"detail": str(error)})
        return _failed(400, "access_denied", str(error))
    except IssuerUnavailable as error:
        log.warning("bff login: issuer unavailable", extra={"detail": str(error)})
        return _failed(502, "temporarily_unavailable", "the sign-in service cannot be reached")
    previous = request.cookies.get(SESSION_COOKIE)
    if previous and len(previous) <= MAX_COOKIE:
        await bff.store.delete(digest(previous))  # a new login is a new session id (no fixation)
    value = new_session_id()
    session = Session(
        digest=digest(value),
        subject=claims["sub"],
        claims=claims,
        tokens=Tokens(
            access_token=answer.access_token,
            expires_at=answer.expires_at,
            refresh_token=answer.refresh_token,
            id_token=answer.id_token,
            obtained_at=now,
        ),
        created_at=now,
        last_seen_at=now,
        expires_at=now + bff.settings.session_absolute_ttl,
        sid=_family_sid(answer.access_token),
    )
    await bff.store.create(session)
    bff.metrics.sessions_started.inc()
    await bff.purge()
    log.info("bff session started", extra={"subject": session.subject})
    response: Response[Any] = Redirect(state.return_to, status_code=303)
    _clear_login_cookie(response)
    set_session_cookie(response, value, bff.settings.session_absolute_ttl)
    return no_store(response)


@get("/bff/user", include_in_schema=False)
async def user(request: Request[Any, Any, Any]) -> Response[Any]:
    bff = runtime_of(request)
    session = await bff.session(request.cookies)
    if session is None:
        return json_error(401, "unauthorized", "no session")
    body = {
        "sub": session.subject,
        "claims": session.claims,
        "expires_at": session.ends_at(bff.settings.session_idle_ttl),
    }
    return Response(body, headers=NO_STORE)


@post("/bff/logout", include_in_schema=False, status_code=200)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    bff = runtime_of(request)
    if not (csrf_ok(request) or same_origin_form(request, bff.settings.url)):
        return json_error(403, "forbidden", "the X-CSRF: 1 header is required")
    session = await bff.session(request.cookies)
    id_token = None
    if session is not None:
        id_token = session.tokens.id_token
        if session.tokens.refresh_token is not None:
            await bff.issuer.revoke(session.tokens.refresh_token)  # RFC 7009: ends the family
        else:
            await bff.issuer.revoke(session.tokens.access_token, hint="access_token")
        await bff.store.delete(session.digest)
        bff.metrics.ended("logout")
        log.info("bff session ended: logout", extra={"subject": session.subject})
    response: Response[Any]
    if request.query_params.get("global") == "1":
        try:
            endpoints = await bff.issuer.endpoints()
        except IssuerUnavailable:
            endpoints = None
        if endpoints is not None and endpoints.end_session is not None:
            query: dict[str, str] = {"client_id": bff.settings.client_id}
            if id_token is not None:
                query["id_token_hint"] = id_token
            if bff.settings.post_logout_redirect_uri is not None:
                query["post_logout_redirect_uri"] = bff.settings.post_logout_redirect_uri
            separator = "&" if "?" in endpoints.end_session else "?"
            response = Redirect(f"{endpoints.end_session}{separator}{urlencode(query)}", status_code=303)
        else:
            response = Response(None, status_code=204)
    else:
        response = Response(None, status_code=204)
    clear_session_cookie(response)
    return no_store(response)


@get("/bff/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[Any]:
    bff = runtime_of(request)
    expected = bff.settings.metrics_token
    presented = request.headers.get("authorization", "")
    if not expected or not hmac.compare_digest(presented.encode(), f"Bearer {expected}".encode()):
        return json_error(404, "not_found", "no such path")
    return Response(bff.metrics.render(), media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)


HANDLERS = [login, callback, user, logout, metrics]
