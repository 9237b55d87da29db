"""``GET|POST /logout``: OpenID Connect RP-Initiated Logout 1.0 (the ``end_session_endpoint``).

- ``post_logout_redirect_uri`` must be exactly one of the client's registered ones; the client is
  the ``id_token_hint``'s ``aud`` or ``client_id`` (both given: they must agree). Anything else is
  an error page, never a redirect.
- A valid hint naming the browser's live session (its ``sub``, and its ``sid`` when it has one)
  ends the session at once: the session's refresh families are revoked and their ``sid``\\ s
  denylisted (:meth:`issuer.revocation.service.Revocation.end_browser_session`).
- Without such a hint the user confirms on a page (a CSRF-protected form, purpose ``logout``), so
  that a third-party page cannot sign the user out by a link.
- With no session there is nothing to end: the answer is the same redirect or "signed out" page.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response, route
from litestar.response import Template

from issuer.clients import ClientRecord
from issuer.http.authorize import live_session
from issuer.http.forms import read_form
from issuer.http.pages import (
    REQUEST_COOKIE,
    SESSION_COOKIE,
    binding_of,
    clear_cookie,
    cookie,
    error_page,
    page,
    redirect,
    set_cookie,
)
from issuer.runtime import Runtime
from issuer.signin import flow
from issuer.store.signin import StoredSession

__all__ = ["logout"]

log = logging.getLogger("issuer.signin")


def _signed_out(runtime: Runtime, target: str | None, state: str | None) -> Response[Any]:
    response: Response[Any]
    if target is not None:
        response = redirect(flow.response_uri(target, {"state": state}))
    else:
        response = page("signed_out.html", {})
    clear_cookie(response, SESSION_COOKIE)
    return response


async def _end(runtime: Runtime, session: StoredSession | None, address: str | None) -> None:
    if session is not None:
        families = await runtime.revocation.end_browser_session(
            session.id, reason="logout", actor=f"user:{session.subject}", address=address
        )
        log.info("browser session ended", extra={"subject": session.subject, "families": len(families or ())})


@route("/logout", http_method=["GET", "POST"], include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Response[Any] | Template:
    runtime: Runtime = request.app.state.runtime
    if request.method == "POST":
        params = await read_form(request)
    else:
        params = {name: value for name, value in request.query_params.items() if value}
    hint = runtime.id_tokens.read_hint(params["id_token_hint"]) if "id_token_hint" in params else None
    client_id = params.get("client_id")
    if hint is not None and client_id is not None and client_id != hint.client_id:
        return error_page(
            "The id_token_hint and client_id name different applications.", heading="Sign-out failed"
        )
    client_id = hint.client_id if hint is not None else client_id
    client: ClientRecord | None = (
        await runtime.clients.get(client_id) if client_id and len(client_id) <= 64 else None
    )
    target = params.get("post_logout_redirect_uri")
    if target is not None and (client is None or target not in client.post_logout_redirect_uris):
        return error_page(
            "The post_logout_redirect_uri is not registered for the application.", heading="Sign-out failed"
        )
    state = params.get("state")
    address = request.client.host if request.client else None
    session = await live_session(runtime, request)
    if "csrf" in params and request.method == "POST":  # the confirmation page's form
        if not runtime.csrf.check("logout", cookie(request, REQUEST_COOKIE), params["csrf"]):
            return error_page("This form has expired or was not sent from this browser.", 403)
        await _end(runtime, session, address)
        return _signed_out(runtime, target, state)
    if session is None:
        return _signed_out(runtime, target, state)  # nothing to end: harmless
    if (
        hint is not None
        and hint.subject == session.subject
        and (hint.session_id is None or hint.session_id == session.id)
    ):
        await _end(runtime, session, address)
        return _signed_out(runtime, target, state)
    binding = binding_of(request)
    response = page(
        "logout.html",
        {
            "csrf": runtime.csrf.token("logout", binding),
            "client_name": client.name if client is not None else None,
            "client_id": client.client_id if client is not None else None,
            "post_logout_redirect_uri": target,
            "state": state,
        },
        form_targets=[target] if target else [],
    )
    set_cookie(response, REQUEST_COOKIE, binding, runtime.settings.authorization_request_ttl)
    return response
