"""The consent page of third-party clients: allow, deny, remembered per scope, prompt=consent."""

from __future__ import annotations

import httpx
import pytest

from issuer.runtime import Runtime
from tests.signin.browser import (
    PASSWORD,
    REDIRECT,
    Browser,
    app_client,
    auth_params,
    form_fields,
    location_params,
    new_client,
    sign_in,
)

pytestmark = pytest.mark.asyncio


async def _decide(browser: Browser, consent_url: str, decision: str) -> tuple[httpx.Response, str]:
    page = await browser.get(consent_url)
    assert page.status_code == 200
    fields = form_fields(page.text)
    assert ("decision", "allow") in fields.buttons and ("decision", "deny") in fields.buttons
    answer = await browser.post(
        "/consent", {"request": fields.inputs["request"], "csrf": fields.inputs["csrf"], "decision": decision}
    )
    return answer, page.text


async def test_consent_deny_is_access_denied(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, first_party=False)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        done = await sign_in(browser, client_id, state="s-9")
        assert done.headers["location"].startswith("/consent?request=")
        answer, _ = await _decide(browser, done.headers["location"], "deny")
        params = location_params(answer)
        assert answer.headers["location"].startswith(REDIRECT + "?")
        assert params["error"] == "access_denied" and params["state"] == "s-9" and "code" not in params
        # nothing was remembered: the next request asks again
        again = await browser.get("/authorize", **auth_params(client_id))
        assert again.headers["location"].startswith("/consent?request=")


async def test_consent_is_remembered_per_scope(signin_runtime: Runtime) -> None:
    subject = await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, first_party=False)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        done = await sign_in(browser, client_id, scope="openid read")
        answer, page = await _decide(browser, done.headers["location"], "allow")
        assert "<code>openid</code>" in page and "<code>read</code>" in page
        assert location_params(answer)["code"].startswith("ica_")
        # the same scopes again: no page
        same = await browser.get("/authorize", **auth_params(client_id, scope="read"))
        assert location_params(same)["code"].startswith("ica_")
        # a new scope: the page asks for the new one only
        more = await browser.get("/authorize", **auth_params(client_id, scope="read write"))
        assert more.headers["location"].startswith("/consent?request=")
        answer, page = await _decide(browser, more.headers["location"], "allow")
        assert "<code>write</code>" in page and "<code>read</code>" not in page
        assert location_params(answer)["code"].startswith("ica_")
        # prompt=none while a consent is missing: consent_required
        async with signin_runtime.db.transaction() as conn:
            assert await signin_runtime.consents.granted(conn, subject, client_id) == {
                "openid",
                "read",
                "write",
            }
            await signin_runtime.consents.revoke(conn, subject, client_id)
        silent = await browser.get("/authorize", **auth_params(client_id, prompt="none"))
        assert location_params(silent)["error"] == "consent_required"


async def test_prompt_consent_shows_the_page_even_when_granted(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, first_party=False)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        done = await sign_in(browser, client_id, scope="read")
        await _decide(browser, done.headers["location"], "allow")
        again = await browser.get("/authorize", **auth_params(client_id, scope="read", prompt="consent"))
        assert again.headers["location"].startswith("/consent?request=")
        answer, page = await _decide(browser, again.headers["location"], "allow")
        assert "<code>read</code>" in page and location_params(answer)["code"].startswith("ica_")


async def test_first_party_clients_never_see_the_consent_page(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, first_party=True)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        assert location_params(await sign_in(browser, client_id))["code"].startswith("ica_")
        again = await browser.get("/authorize", **auth_params(client_id, prompt="consent"))
        assert location_params(again)["code"].startswith("ica_")


async def test_consent_csrf_post_without_token_is_refused(signin_runtime: Runtime) -> None:
    subject = await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, first_party=False)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        done = await sign_in(browser, client_id)
        page = await browser.get(done.headers["location"])
        request_id = form_fields(page.text).inputs["request"]
        refused = await browser.post("/consent", {"request": request_id, "decision": "allow"})
        login_token = await browser.post(
            "/consent",
            {
                "request": request_id,
                "decision": "allow",
                "csrf": signin_runtime.csrf.token("login", browser.cookies["__Host-issuer-request"]),
            },
        )
    for response in (refused, login_token):
        assert response.status_code == 403 and "location" not in response.headers
    async with signin_runtime.db.transaction() as conn:
        assert await signin_runtime.consents.granted(conn, subject, client_id) == set()
