"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at GET|POST /logout."""

from __future__ import annotations

import secrets

import pytest

from issuer.runtime import Runtime
from issuer.signin.codes import digest
from issuer.store.signin import StoredSession
from tests.signin.browser import (
    LOGOUT_REDIRECT,
    PASSWORD,
    Browser,
    app_client,
    form_fields,
    location_params,
    new_client,
    sign_in,
)

pytestmark = pytest.mark.asyncio


async def _session(runtime: Runtime, browser: Browser) -> StoredSession:
    async with runtime.db.transaction() as conn:
        session = await runtime.browser_sessions.live(
            conn, digest(browser.cookies["__Host-issuer-session"]), int(runtime.clock())
        )
    assert session is not None
    return session


async def _family(runtime: Runtime, session: StoredSession, client_id: str) -> str:
    family_id = "sid_" + secrets.token_urlsafe(16)
    async with runtime.db.transaction() as conn:
        await runtime.refresh_store.start_family(
            conn,
            family_id=family_id,
            client_id=client_id,
            subject=session.subject,
            scope="openid",
            digest=digest(secrets.token_urlsafe(32)),
            now=int(runtime.clock()),
            idle_ttl=3600,
            absolute_ttl=7200,
            browser_session_id=session.id,
        )
    return family_id


def _hint(runtime: Runtime, session: StoredSession, client_id: str) -> str:
    return runtime.id_tokens.mint(
        subject=session.subject,
        client_id=client_id,
        auth_time=session.auth_time,
        session_id=session.id,
        ttl=300,
    )


async def test_logout_ends_session_and_revokes_families(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        await sign_in(browser, client_id)
        session = await _session(signin_runtime, browser)
        family_id = await _family(signin_runtime, session, client_id)
        response = await browser.get(
            "/logout",
            id_token_hint=_hint(signin_runtime, session, client_id),
            post_logout_redirect_uri=LOGOUT_REDIRECT,
            state="bye-1",
        )
        assert response.headers["location"] == LOGOUT_REDIRECT + "?state=bye-1"
        assert location_params(response) == {"state": "bye-1"}
        assert "__Host-issuer-session" not in browser.cookies  # cleared
        now = int(signin_runtime.clock())
        async with signin_runtime.db.transaction() as conn:
            ended = await signin_runtime.browser_sessions.by_id(conn, session.id)
            live = await signin_runtime.refresh_store.families(
                conn, browser_session_id=session.id, live_at=now
            )
        assert ended is not None and ended.ended_reason == "logout"
        assert live == []
        token_claims = {"sid": family_id, "sub": session.subject, "client_id": client_id, "iat": now - 5}
        assert await signin_runtime.denylist.is_revoked(token_claims)  # its sid is on the denylist
        # the next authorization needs the login page again
        again = await sign_in(browser, client_id)
        assert location_params(again)["code"].startswith("ica_")


async def test_logout_without_hint_asks_for_confirmation(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        await sign_in(browser, client_id)
        session = await _session(signin_runtime, browser)
        page = await browser.get(
            "/logout", client_id=client_id, post_logout_redirect_uri=LOGOUT_REDIRECT, state="s"
        )
        assert page.status_code == 200 and "location" not in page.headers
        assert "form-action 'self' https://app.example" in page.headers["content-security-policy"]
        fields = form_fields(page.text).inputs
        assert fields["post_logout_redirect_uri"] == LOGOUT_REDIRECT and fields["client_id"] == client_id
        # a forged confirmation (no token) ends nothing
        forged = await browser.post("/logout", {**fields, "csrf": "forged"})
        assert forged.status_code == 403
        assert (await _session(signin_runtime, browser)).id == session.id
        confirmed = await browser.post("/logout", fields)
        assert confirmed.headers["location"] == LOGOUT_REDIRECT + "?state=s"
        async with signin_runtime.db.transaction() as conn:
            ended = await signin_runtime.browser_sessions.by_id(conn, session.id)
        assert ended is not None and ended.ended_at is not None


async def test_logout_hint_of_another_session_asks_for_confirmation(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        await sign_in(browser, client_id)
        session = await _session(signin_runtime, browser)
        other = signin_runtime.id_tokens.mint(
            subject=session.subject, client_id=client_id, auth_time=1, session_id="bs_other", ttl=300
        )
        page = await browser.get("/logout", id_token_hint=other)
        assert page.status_code == 200 and "csrf" in form_fields(page.text).inputs
        assert (await _session(signin_runtime, browser)).id == session.id


async def test_logout_unregistered_post_logout_redirect_is_an_error_page(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        await sign_in(browser, client_id)
        session = await _session(signin_runtime, browser)
        hint = _hint(signin_runtime, session, client_id)
        for target in ("https://evil.example/", LOGOUT_REDIRECT + "?x=1", LOGOUT_REDIRECT + "/"):
            response = await browser.get("/logout", id_token_hint=hint, post_logout_redirect_uri=target)
            assert response.status_code == 400 and "location" not in response.headers
        no_client = await browser.get("/logout", post_logout_redirect_uri=LOGOUT_REDIRECT)
        assert no_client.status_code == 400 and "location" not in no_client.headers
        assert (await _session(signin_runtime, browser)).id == session.id  # nothing ended


async def test_logout_without_session_is_harmless(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        page = await browser.get("/logout")
        assert page.status_code == 200 and "Signed out" in page.text
        back = await browser.get("/logout", client_id=client_id, post_logout_redirect_uri=LOGOUT_REDIRECT)
        assert back.headers["location"] == LOGOUT_REDIRECT
