"""The login page: CSRF, same answer for wrong password and unknown user, rate limits, sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from issuer.keys.material import KeyMaterial
from issuer.runtime import Runtime
from issuer.signin.codes import digest
from tests.conftest import make_settings
from tests.signin.browser import (
    PASSWORD,
    Browser,
    app_client,
    auth_params,
    form_fields,
    location_params,
    new_client,
    sign_in,
)

pytestmark = pytest.mark.asyncio


async def _login_page(browser: Browser, client_id: str, **extra: str) -> dict[str, str]:
    first = await browser.get("/authorize", **auth_params(client_id, **extra))
    page = await browser.get(first.headers["location"])
    assert page.status_code == 200
    return form_fields(page.text).inputs


async def test_login_page_form(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        first = await browser.get("/authorize", **auth_params(client_id, login_hint="bob<script>"))
        page = await browser.get(first.headers["location"])
    fields = form_fields(page.text)
    assert set(fields.inputs) == {"request", "csrf", "username", "password"}
    assert len(fields.buttons) == 1
    assert fields.inputs["username"] == "bob<script>"  # prefilled, and escaped in the HTML:
    assert "bob<script>" not in page.text and "bob&lt;script&gt;" in page.text
    assert '<label for="username">' in page.text and '<label for="password">' in page.text
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[1]
    assert f"<h1>{signin_runtime.settings.page_title}</h1>" in page.text


async def test_login_csrf_post_without_token_is_refused(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        fields = await _login_page(browser, client_id)
        form = {"username": "alice", "password": PASSWORD, "request": fields["request"]}
        refused = await browser.post("/login", form)
        wrong = await browser.post("/login", {**form, "csrf": "x" * 43})
        # the token of another browser (another binding) is no good either
        other = Browser(http)
        other_fields = await _login_page(other, client_id)
        stolen = await browser.post("/login", {**form, "csrf": other_fields["csrf"]})
    for response in (refused, wrong, stolen):
        assert response.status_code == 403 and "location" not in response.headers
        assert "__Host-issuer-session" not in browser.cookies
    assert signin_runtime.passwords.verifications == 0  # nothing else happened
    assert signin_runtime.login_outcomes == {"ok": 0, "failed": 0, "rate_limited": 0}


async def test_pending_request_of_another_browser_is_refused(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        victim, attacker = Browser(http), Browser(http)
        fields = await _login_page(victim, client_id)
        attacker_fields = await _login_page(attacker, client_id)
        page = await attacker.get("/login", request=fields["request"])
        assert page.status_code == 400
        done = await attacker.post(
            "/login",
            {
                "username": "alice",
                "password": PASSWORD,
                "request": fields["request"],
                "csrf": attacker_fields["csrf"],
            },
        )
        assert done.status_code == 400 and "location" not in done.headers
        consent = await attacker.get("/consent", request=fields["request"])
        assert consent.status_code == 400
    assert signin_runtime.passwords.verifications == 0


async def test_wrong_password_and_unknown_user_get_the_same_page(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        fields = await _login_page(browser, client_id)
        base = {"request": fields["request"], "csrf": fields["csrf"], "password": "not the password"}
        wrong = await browser.post("/login", {**base, "username": "alice"})
        unknown = await browser.post("/login", {**base, "username": "mallory"})
    assert wrong.status_code == unknown.status_code == 200
    assert wrong.text.replace("alice", "NAME") == unknown.text.replace("mallory", "NAME")
    assert "Wrong username or password." in wrong.text
    assert signin_runtime.passwords.verifications == 2  # the same argon2 work for both
    assert signin_runtime.login_outcomes["failed"] == 2
    assert "__Host-issuer-session" not in browser.cookies


async def test_login_sets_the_session_cookie(signin_runtime: Runtime) -> None:
    subject = await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        done = await sign_in(browser, client_id)
        assert location_params(done)["code"].startswith("ica_")
        line = next(x for x in done.headers.get_list("set-cookie") if x.startswith("__Host-issuer-session="))
        for attribute in ("httponly", "secure", "samesite=lax", "path=/"):
            assert attribute in line.lower()
        value = browser.cookies["__Host-issuer-session"]
        async with signin_runtime.db.transaction() as conn:
            session = await signin_runtime.browser_sessions.live(
                conn, digest(value), int(signin_runtime.clock())
            )
        assert session is not None and session.subject == subject
        assert signin_runtime.login_outcomes["ok"] == 1


async def test_login_of_another_user_ends_the_old_session(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    await signin_runtime.users.create("bob", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        await sign_in(browser, client_id, "alice")
        alice = browser.cookies["__Host-issuer-session"]
        await sign_in(browser, client_id, "bob", prompt="login")
        assert browser.cookies["__Host-issuer-session"] != alice
        async with signin_runtime.db.transaction() as conn:
            now = int(signin_runtime.clock())
            assert await signin_runtime.browser_sessions.live(conn, digest(alice), now) is None


async def test_login_rate_limit_is_the_password_limit_of_token(
    sqlite_url: str, tmp_path: Path, material: KeyMaterial
) -> None:
    settings = make_settings(sqlite_url, tmp_path, rate_limit_password=2, rate_limit_window=60)
    runtime = Runtime(settings, material=material)
    try:
        await runtime.users.create("alice", PASSWORD)
        client_id = await new_client(runtime)
        async with app_client(runtime) as http:
            browser = Browser(http)
            fields = await _login_page(browser, client_id)
            form = {"request": fields["request"], "csrf": fields["csrf"], "username": "alice"}
            answers = [await browser.post("/login", {**form, "password": "wrong password"}) for _ in range(3)]
            right = await browser.post("/login", {**form, "password": PASSWORD})
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
        assert right.headers["content-type"].startswith("text/html")
        assert runtime.passwords.verifications == 2  # refused attempts cost no argon2 hash
        assert runtime.login_outcomes["rate_limited"] == 2
        assert "__Host-issuer-session" not in browser.cookies
    finally:
        await runtime.db.close()


async def test_templates_dir_overrides_one_template(
    sqlite_url: str, tmp_path: Path, material: KeyMaterial
) -> None:
    custom = tmp_path / "templates"
    custom.mkdir()
    (custom / "error.html").write_text("<p>custom {{ page_title }}: {{ message }}</p>")
    settings = make_settings(sqlite_url, tmp_path, templates_dir=custom, page_title="Example & Co")
    runtime = Runtime(settings, material=material)
    try:
        client_id = await new_client(runtime)
        async with app_client(runtime) as http:
            error = await http.get("/authorize", params={"client_id": "cli_nobody"})
            browser = Browser(http)
            fields = await _login_page(browser, client_id)  # the built-in login page still
            page = await browser.get("/login", request=fields["request"])
            css = await http.get("/static/signin.css")
        assert error.status_code == 400 and error.text.startswith("<p>custom Example &amp; Co:")
        assert "<h1>Example &amp; Co</h1>" in page.text
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    finally:
        await runtime.db.close()


async def test_login_outcomes_are_counted_in_metrics(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        fields = await _login_page(browser, client_id)
        await browser.post(
            "/login",
            {"request": fields["request"], "csrf": fields["csrf"], "username": "alice", "password": "nope"},
        )
        await sign_in(browser, client_id)
        text = (await signin_runtime.metrics.render()).decode()
    assert 'issuer_logins_total{outcome="ok"} 1.0' in text
    assert 'issuer_logins_total{outcome="failed"} 1.0' in text
    assert 'issuer_logins_total{outcome="rate_limited"} 0.0' in text
    assert PASSWORD not in text
