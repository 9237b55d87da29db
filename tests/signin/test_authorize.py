"""GET|POST /authorize: validation order, open-redirect refusals, PKCE, prompt/max_age, SSO, headers."""

from __future__ import annotations

import time

import pytest

from issuer.runtime import Runtime
from issuer.signin.codes import digest
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


async def _page_error(signin_runtime: Runtime, **params: str | None) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        response = await Browser(http).get("/authorize", **auth_params(client_id, **params))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


async def test_open_redirect_unregistered_uri_is_an_error_page(signin_runtime: Runtime) -> None:
    await _page_error(signin_runtime, redirect_uri="https://evil.example/cb")


async def test_open_redirect_extra_query_is_an_error_page(signin_runtime: Runtime) -> None:
    await _page_error(signin_runtime, redirect_uri=REDIRECT + "?next=https://evil.example")


async def test_open_redirect_other_port_non_loopback_is_an_error_page(signin_runtime: Runtime) -> None:
    await _page_error(signin_runtime, redirect_uri="https://app.example:8443/cb")


async def test_open_redirect_fragment_is_an_error_page(signin_runtime: Runtime) -> None:
    await _page_error(signin_runtime, redirect_uri=REDIRECT + "#frag")


async def test_unknown_client_is_an_error_page(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        response = await Browser(http).get("/authorize", **auth_params("cli_unknown"))
    assert response.status_code == 400 and "location" not in response.headers


async def test_disabled_client_is_an_error_page(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    await signin_runtime.clients.set_disabled(client_id, True)
    async with app_client(signin_runtime) as http:
        response = await Browser(http).get("/authorize", **auth_params(client_id))
    assert response.status_code == 400 and "location" not in response.headers


async def test_loopback_redirect_matches_any_port(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime, redirect_uris=["http://127.0.0.1/cb"])
    async with app_client(signin_runtime) as http:
        response = await Browser(http).get(
            "/authorize", **auth_params(client_id, redirect_uri="http://127.0.0.1:51234/cb")
        )
    assert response.status_code == 303 and response.headers["location"].startswith("/login?request=")


async def test_absent_redirect_uri_only_with_one_registered(signin_runtime: Runtime) -> None:
    one = await new_client(signin_runtime)
    two = await new_client(signin_runtime, redirect_uris=[REDIRECT, "https://app.example/other"])
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        assert (await browser.get("/authorize", **auth_params(one, redirect_uri=None))).status_code == 303
        assert (await browser.get("/authorize", **auth_params(two, redirect_uri=None))).status_code == 400


async def _redirect_error(signin_runtime: Runtime, **params: str | None) -> dict[str, str]:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        response = await Browser(http).get("/authorize", **auth_params(client_id, state="s-1", **params))
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    answer = location_params(response)
    assert answer["state"] == "s-1" and answer["iss"] == signin_runtime.settings.url
    assert "code" not in answer
    return answer


async def test_pkce_missing_is_refused(signin_runtime: Runtime) -> None:
    answer = await _redirect_error(signin_runtime, code_challenge=None, code_challenge_method=None)
    assert answer["error"] == "invalid_request"


async def test_pkce_plain_is_refused(signin_runtime: Runtime) -> None:
    answer = await _redirect_error(signin_runtime, code_challenge_method="plain")
    assert answer["error"] == "invalid_request"


async def test_response_type_token_is_unsupported(signin_runtime: Runtime) -> None:
    answer = await _redirect_error(signin_runtime, response_type="token")
    assert answer["error"] == "unsupported_response_type"


async def test_scope_outside_the_client_is_invalid_scope(signin_runtime: Runtime) -> None:
    answer = await _redirect_error(signin_runtime, scope="openid admin")
    assert answer["error"] == "invalid_scope"


@pytest.mark.parametrize("prompt", ["none login", "select_account"])
async def test_bad_prompt_is_invalid_request(signin_runtime: Runtime, prompt: str) -> None:
    assert (await _redirect_error(signin_runtime, prompt=prompt))["error"] == "invalid_request"


@pytest.mark.parametrize("max_age", ["-1", "soon", "1.5"])
async def test_bad_max_age_is_invalid_request(signin_runtime: Runtime, max_age: str) -> None:
    assert (await _redirect_error(signin_runtime, max_age=max_age))["error"] == "invalid_request"


async def test_repeated_parameter_is_invalid_request(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        params = auth_params(client_id, state="s-1")
        query = "&".join(f"{k}={v}" for k, v in params.items()) + "&scope=write"
        response = await http.get("/authorize?" + query, follow_redirects=False)
    assert location_params(response)["error"] == "invalid_request"


async def test_repeated_redirect_uri_is_an_error_page(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        params = auth_params(client_id)
        query = "&".join(f"{k}={v}" for k, v in params.items()) + "&redirect_uri=https://evil.example/"
        response = await http.get("/authorize?" + query, follow_redirects=False)
    assert response.status_code == 400 and "location" not in response.headers


async def test_error_keeps_the_registered_query(signin_runtime: Runtime) -> None:
    registered = "https://app.example/cb?tenant=a"
    client_id = await new_client(signin_runtime, redirect_uris=[registered])
    async with app_client(signin_runtime) as http:
        response = await Browser(http).get(
            "/authorize", **auth_params(client_id, redirect_uri=registered, response_type="token")
        )
    assert response.headers["location"].startswith(registered + "&error=unsupported_response_type")
    assert location_params(response)["tenant"] == "a"


async def test_post_form_works_like_get(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        response = await Browser(http).post("/authorize", auth_params(client_id))
    assert response.status_code == 303 and response.headers["location"].startswith("/login?request=")
    assert "__Host-issuer-request=" in response.headers["set-cookie"]


async def test_binding_cookie_is_reused_and_pending_request_is_kept_by_digest(
    signin_runtime: Runtime,
) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        first = await browser.get("/authorize", **auth_params(client_id))
        binding = browser.cookies["__Host-issuer-request"]
        cookie_line = first.headers["set-cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
            assert attribute.lower() in cookie_line.lower()
        await browser.get("/authorize", **auth_params(client_id))
        assert browser.cookies["__Host-issuer-request"] == binding
        request_id = first.headers["location"].split("=", 1)[1]
        async with signin_runtime.db.transaction() as conn:
            found = await signin_runtime.authorization_requests.get(
                conn, request_id, digest(binding), 1 << 40 >> 20
            )
        assert found is not None and found.client_id == client_id


async def test_prompt_none_without_session_is_login_required(signin_runtime: Runtime) -> None:
    assert (await _redirect_error(signin_runtime, prompt="none"))["error"] == "login_required"


async def _signed_in(runtime: Runtime, http: object, client_id: str) -> Browser:
    browser = Browser(http)  # type: ignore[arg-type]
    answer = location_params(await sign_in(browser, client_id))
    assert answer["code"].startswith("ica_")
    return browser


async def test_sso_second_client_skips_login(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    first = await new_client(signin_runtime)
    second = await new_client(signin_runtime, name="Other")
    async with app_client(signin_runtime) as http:
        browser = await _signed_in(signin_runtime, http, first)
        response = await browser.get("/authorize", **auth_params(second, state="s-2"))
        answer = location_params(response)
        assert response.headers["location"].startswith(REDIRECT + "?")
        assert answer["code"].startswith("ica_") and answer["state"] == "s-2"
        silent = location_params(await browser.get("/authorize", **auth_params(second, prompt="none")))
        assert silent["code"].startswith("ica_")


async def test_prompt_login_forces_the_login_page(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = await _signed_in(signin_runtime, http, client_id)
        old = browser.cookies["__Host-issuer-session"]
        response = await sign_in(browser, client_id, prompt="login")  # asserts the login page came
        assert location_params(response)["code"].startswith("ica_")  # satisfied by this login
        assert browser.cookies["__Host-issuer-session"] != old  # a fresh session after a password


async def test_max_age(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = await _signed_in(signin_runtime, http, client_id)
        ok = await browser.get("/authorize", **auth_params(client_id, max_age="3600"))
        assert location_params(ok)["code"].startswith("ica_")
        signin_runtime.clock = lambda: time.time() + 120  # auth_time is 2 minutes old
        stale = await browser.get("/authorize", **auth_params(client_id, max_age="60"))
        assert stale.headers["location"].startswith("/login?request=")
        silent = await browser.get("/authorize", **auth_params(client_id, max_age="60", prompt="none"))
        assert location_params(silent)["error"] == "login_required"


async def test_disabled_user_must_sign_in_again(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = await _signed_in(signin_runtime, http, client_id)
        await signin_runtime.users.set_disabled("alice", True)
        response = await browser.get("/authorize", **auth_params(client_id))
        assert response.headers["location"].startswith("/login?request=")


async def test_code_is_bound_to_the_request(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        params = auth_params(client_id, nonce="n-1", scope="openid")
        first = await browser.get("/authorize", **params)
        page = await browser.get(first.headers["location"])
        fields = form_fields(page.text).inputs
        done = await browser.post(
            "/login",
            {"username": "alice", "password": PASSWORD, "request": fields["request"], "csrf": fields["csrf"]},
        )
        code = location_params(done)["code"]
        async with signin_runtime.db.transaction() as conn:
            spent = await signin_runtime.codes.spend(conn, digest(code), int(signin_runtime.clock()))
            again = await signin_runtime.authorization_requests.get(
                conn, fields["request"], digest(browser.cookies["__Host-issuer-request"]), 0
            )
        stored = spent.code
        assert stored is not None and stored.client_id == client_id and stored.redirect_uri == REDIRECT
        assert stored.code_challenge == params["code_challenge"] and stored.scope == "openid"
        assert stored.nonce == "n-1"
        assert again is None  # the pending request was spent with the code
        # the same login form again: the request is gone
        replay = await browser.post(
            "/login",
            {"username": "alice", "password": PASSWORD, "request": fields["request"], "csrf": fields["csrf"]},
        )
        assert replay.status_code == 400 and "location" not in replay.headers


async def test_clickjacking_headers_on_every_page(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, first_party=False)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        first = await browser.get("/authorize", **auth_params(client_id))
        login = await browser.get(first.headers["location"])
        fields = form_fields(login.text).inputs
        wrong = await browser.post(
            "/login",
            {"username": "alice", "password": "nope", "request": fields["request"], "csrf": fields["csrf"]},
        )
        done = await browser.post(
            "/login",
            {"username": "alice", "password": PASSWORD, "request": fields["request"], "csrf": fields["csrf"]},
        )
        consent = await browser.get(done.headers["location"])
        error = await browser.get("/authorize", client_id="cli_nobody")
        forged = await browser.post("/login", {"username": "a", "password": "b", "request": "x"})
        logout = await browser.get("/logout")
        pages = [first, login, wrong, done, consent, error, forged, logout]
        for response in pages:
            headers = response.headers
            assert headers["cache-control"] == "no-store" and headers["pragma"] == "no-cache"
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "default-src 'none'" in headers["content-security-policy"]
        assert "form-action 'self' https://app.example" in login.headers["content-security-policy"]
        assert consent.status_code == 200 and "<script" not in consent.text


async def test_no_cors_on_the_authorization_endpoint(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    origin = "https://app.example"
    async with app_client(signin_runtime) as http:
        get = await http.get(
            "/authorize", params=auth_params(client_id), headers={"origin": origin}, follow_redirects=False
        )
        preflight = await http.options(
            "/authorize", headers={"origin": origin, "access-control-request-method": "POST"}
        )
    for response in (get, preflight):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


async def test_expired_requests_are_pruned(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        old = await browser.get("/authorize", **auth_params(client_id))
        old_id = old.headers["location"].split("=", 1)[1]
        ttl = signin_runtime.settings.authorization_request_ttl
        signin_runtime.clock = lambda: time.time() + ttl + 10
        await browser.get("/authorize", **auth_params(client_id))
    async with signin_runtime.db.transaction() as conn:
        gone = await signin_runtime.authorization_requests.get(
            conn, old_id, digest(browser.cookies["__Host-issuer-request"]), 0
        )
    assert gone is None


async def test_bad_form_body_is_an_html_page(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        response = await http.post(
            "/login", content=b'{"username": "a"}', headers={"content-type": "application/json"}
        )
        repeated = await http.post(
            "/authorize",
            content=b"client_id=a&client_id=b",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 415 and repeated.status_code == 400
    for answer in (response, repeated):
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["x-frame-options"] == "DENY" and "location" not in answer.headers
