"""Browser sign-in in a real browser: headless Chromium (Debian's package) driven by Playwright,
against a real ``issuer serve`` process on SQLite, with a loopback client app receiving the
redirects (``http://127.0.0.1:PORT/cb``; Chromium treats 127.0.0.1 as secure, so the issuer's
``__Host-`` cookies work over plain http there).

One browser for the module, a fresh browser context (empty cookie jar) per test. Each flow is a
user's whole path: the authorization request, the hosted pages, the landing at the redirect URI,
and the client's code exchange at ``/token`` (httpx).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Page

from tests import support
from tests.browser import harness
from tests.browser.harness import (
    REQUEST_COOKIE,
    SESSION_COOKIE,
    authorization_request,
    create_client,
    exchange,
    id_token_claims,
    landed,
    log_in,
    on_consent_page,
    on_login_page,
    open_authorize,
    refresh,
)


@dataclass(frozen=True)
class Site:
    issuer: str
    app: str  # the client app's origin
    spa: str  # public, first-party, with a post-logout redirect
    second: str  # another public first-party client (single sign-on)
    partner: str  # confidential, third-party (the consent page)
    partner_secret: str
    subjects: dict[str, str]

    @property
    def callback(self) -> str:
        return self.app + "/cb"

    @property
    def bye(self) -> str:
        return self.app + "/bye"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with harness.chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("browser")
    env = support.issuer_env(f"sqlite:///{tmp / 'issuer.db'}", tmp / "keys")
    harness.migrate(env)
    with harness.client_app() as app:
        # a loopback redirect is registered without a port and matches any (RFC 8252 7.3)
        spa, _ = create_client(
            env, "Spa", redirect_uri="http://127.0.0.1/cb", post_logout_redirect_uri=app + "/bye"
        )
        second, _ = create_client(env, "Second", redirect_uri="http://127.0.0.1/cb")
        partner, secret = create_client(
            env,
            "Partner",
            redirect_uri="http://127.0.0.1/cb",
            public=False,
            first_party=False,
            scope="openid profile read write",
        )
        assert secret
        subjects = {name: harness.add_user(env, name) for name in ("alice", "bob", "carol", "dave")}
        with support.running_server(env, tmp / "server.log") as server:
            yield Site(server.url, app, spa, second, partner, secret, subjects)


@pytest.fixture
def page(site: Site, chromium: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) for each test; ``site`` first: it is set up before the
    browser starts (see :func:`harness.cli`)."""
    with harness.fresh_page(chromium) as page:
        yield page


def _cookies(page: Page) -> dict[str, Any]:
    return {c["name"]: c for c in page.context.cookies()}


def _sign_in(page: Page, site: Site, client_id: str, username: str = "alice", **extra: str) -> dict[str, Any]:
    """authorize → login page → submit → the redirect URI; returns the code's exchange (JSON)."""
    request = authorization_request(site.issuer, client_id, site.callback, **extra)
    open_authorize(page, request.url)
    assert on_login_page(page), page.url
    log_in(page, username)
    params = landed(page, site.callback)
    assert params["state"] == request.state and params["iss"] == site.issuer
    response = exchange(site.issuer, client_id, request, params["code"])
    assert response.status_code == 200, response.text
    body = dict(response.json())
    body["claims"] = id_token_claims(site.issuer, body["id_token"], issuer=site.issuer, client_id=client_id)
    assert body["claims"]["nonce"] == request.nonce
    return body


def test_login_lands_on_the_redirect_uri_and_the_code_gives_tokens(page: Page, site: Site) -> None:
    request = authorization_request(site.issuer, site.spa, site.callback)
    open_authorize(page, request.url)
    assert on_login_page(page), page.url
    assert "Spa" in page.inner_text("body")  # the page names the client
    log_in(page, "alice")
    params = landed(page, site.callback)
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == request.state and params["iss"] == site.issuer
    response = exchange(site.issuer, site.spa, request, params["code"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["access_token"] and tokens["refresh_token"] and tokens["id_token"]
    assert set(tokens["scope"].split()) == {"openid", "profile", "read"}
    claims = id_token_claims(site.issuer, tokens["id_token"], issuer=site.issuer, client_id=site.spa)
    assert claims["sub"] == site.subjects["alice"]
    assert claims["aud"] == site.spa and claims["nonce"] == request.nonce
    assert claims["sid"] and isinstance(claims["auth_time"], int)
    # the code is single use
    again = exchange(site.issuer, site.spa, request, params["code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_second_client_signs_in_without_the_login_page(page: Page, site: Site) -> None:
    first = _sign_in(page, site, site.spa)
    request = authorization_request(site.issuer, site.second, site.callback)
    open_authorize(page, request.url)
    params = landed(page, site.callback)  # straight back: single sign-on, no login page
    assert params["state"] == request.state
    response = exchange(site.issuer, site.second, request, params["code"])
    assert response.status_code == 200, response.text
    claims = id_token_claims(
        site.issuer, response.json()["id_token"], issuer=site.issuer, client_id=site.second
    )
    assert claims["sub"] == first["claims"]["sub"]
    assert claims["auth_time"] == first["claims"]["auth_time"]  # the same sign-in


def test_prompt_login_shows_the_login_page_again(page: Page, site: Site) -> None:
    first = _sign_in(page, site, site.spa)
    request = authorization_request(site.issuer, site.spa, site.callback, prompt="login")
    open_authorize(page, request.url)
    assert on_login_page(page), page.url  # a live session, yet the password is asked again
    log_in(page, "alice")
    params = landed(page, site.callback)
    response = exchange(site.issuer, site.spa, request, params["code"])
    assert response.status_code == 200, response.text
    claims = id_token_claims(site.issuer, response.json()["id_token"], issuer=site.issuer, client_id=site.spa)
    assert claims["sub"] == first["claims"]["sub"]
    assert claims["auth_time"] >= first["claims"]["auth_time"]


def test_prompt_none_without_a_session_answers_login_required(page: Page, site: Site) -> None:
    request = authorization_request(site.issuer, site.spa, site.callback, prompt="none")
    open_authorize(page, request.url)
    params = landed(page, site.callback)  # no page shown: straight back with the error
    assert params["error"] == "login_required"
    assert params["state"] == request.state and params["iss"] == site.issuer


def test_consent_deny_answers_access_denied(page: Page, site: Site) -> None:
    request = authorization_request(site.issuer, site.partner, site.callback)
    open_authorize(page, request.url)
    log_in(page, "bob")
    assert on_consent_page(page), page.url  # a third-party client asks first
    text = page.inner_text("body")
    assert "Partner" in text and all(scope in text for scope in ("openid", "profile", "read"))
    with page.expect_navigation():
        page.click("button[name=decision][value=deny]")
    params = landed(page, site.callback)
    assert params["error"] == "access_denied"
    assert params["state"] == request.state and params["iss"] == site.issuer
    assert "code" not in params
    # nothing was remembered: the next request asks again
    open_authorize(page, authorization_request(site.issuer, site.partner, site.callback).url)
    assert on_consent_page(page), page.url


def test_consent_allow_is_remembered(page: Page, site: Site) -> None:
    request = authorization_request(site.issuer, site.partner, site.callback)
    open_authorize(page, request.url)
    log_in(page, "carol")
    assert on_consent_page(page), page.url
    with page.expect_navigation():
        page.click("button[name=decision][value=allow]")
    params = landed(page, site.callback)
    response = exchange(site.issuer, site.partner, request, params["code"], secret=site.partner_secret)
    assert response.status_code == 200, response.text
    claims = id_token_claims(
        site.issuer, response.json()["id_token"], issuer=site.issuer, client_id=site.partner
    )
    assert claims["sub"] == site.subjects["carol"]
    # the second time: no consent page (and no login page: the session is alive)
    again = authorization_request(site.issuer, site.partner, site.callback)
    open_authorize(page, again.url)
    assert landed(page, site.callback)["state"] == again.state
    # a scope not granted yet brings the consent page back
    wider = authorization_request(site.issuer, site.partner, site.callback, scope="openid profile read write")
    open_authorize(page, wider.url)
    assert on_consent_page(page), page.url


def test_logout_ends_the_session_and_its_refresh_tokens(page: Page, site: Site) -> None:
    tokens = _sign_in(page, site, site.spa, username="dave")
    assert SESSION_COOKIE in _cookies(page)
    logout = (
        site.issuer
        + "/logout?"
        + urlencode(
            {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": site.bye, "state": "bye-1"}
        )
    )
    page.goto(logout)
    assert landed(page, site.bye) == {"state": "bye-1"}
    assert SESSION_COOKIE not in _cookies(page)
    # the next authorization needs the password again
    open_authorize(page, authorization_request(site.issuer, site.spa, site.callback).url)
    assert on_login_page(page), page.url
    # and the refresh token of the ended session is dead
    dead = refresh(site.issuer, site.spa, tokens["refresh_token"])
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"


def test_a_wrong_password_shows_the_same_page_with_a_message_and_sets_no_session(
    page: Page, site: Site
) -> None:
    request = authorization_request(site.issuer, site.spa, site.callback)
    open_authorize(page, request.url)
    login_url = page.url
    log_in(page, "alice", "not the password")
    assert on_login_page(page), page.url
    assert "Wrong username or password." in page.inner_text("body")
    assert SESSION_COOKIE not in _cookies(page)
    wrong_password_page = page.inner_text("form")
    # an unknown user gets the very same page
    log_in(page, "nobody", "not the password")
    assert on_login_page(page) and "Wrong username or password." in page.inner_text("body")
    assert page.inner_text("form").replace("nobody", "alice") == wrong_password_page
    assert SESSION_COOKIE not in _cookies(page)
    # the request is still pending: the right password goes on to the client
    log_in(page, "alice")
    params = landed(page, site.callback)
    assert params["state"] == request.state
    assert urlsplit(login_url).path == "/login"


def test_the_cookies_as_the_browser_sees_them(page: Page, site: Site) -> None:
    _sign_in(page, site, site.spa)
    cookies = _cookies(page)
    assert SESSION_COOKIE in cookies
    for name in (SESSION_COOKIE, REQUEST_COOKIE):
        if name not in cookies:
            continue
        cookie = cookies[name]
        assert cookie["httpOnly"] is True, cookie
        assert cookie["secure"] is True, cookie
        assert cookie["sameSite"] == "Lax", cookie
        assert cookie["path"] == "/", cookie
        assert cookie["domain"] == "127.0.0.1", cookie  # host-only: no Domain attribute
    # script sees none of them: not on the client app's page (same host, other port) ...
    assert "issuer" not in page.evaluate("document.cookie")
    # ... nor on the issuer's own pages
    open_authorize(page, authorization_request(site.issuer, site.spa, site.callback, prompt="login").url)
    assert on_login_page(page)
    assert REQUEST_COOKIE in _cookies(page)
    assert "issuer" not in page.evaluate("document.cookie")


def test_the_issuer_pages_cannot_be_framed(page: Page, site: Site) -> None:
    """Clickjacking: the login page refuses to render inside another page's frame (CSP
    ``frame-ancestors 'none'``, ``X-Frame-Options: DENY``); a page of the app itself, framed the
    same way, renders (the control)."""
    page.goto(site.callback)
    login = authorization_request(site.issuer, site.spa, site.callback).url
    with page.expect_response(lambda r: urlsplit(r.url).path == "/login") as answer:
        page.set_content(
            f'<iframe name="issuer" src="{login}"></iframe>'
            f'<iframe name="app" src="{site.app}/framed"></iframe>'
        )
    assert answer.value.status == 200
    page.wait_for_load_state("load")
    issuer, app = page.frame(name="issuer"), page.frame(name="app")
    assert issuer is not None and app is not None
    assert issuer.url.startswith("chrome-error://"), issuer.url  # blocked, not rendered
    assert issuer.locator("input[name=password]").count() == 0
    assert app.url == site.app + "/framed" and "back at the app" in app.inner_text("body")


SPA_EXCHANGE = """async ([issuer, form]) => {
  const token = await fetch(issuer + "/token", {method: "POST", body: new URLSearchParams(form)});
  const tokens = await token.json();
  const bearer = {authorization: "Bearer " + tokens.access_token};
  const userinfo = await fetch(issuer + "/userinfo", {headers: bearer});
  return {status: token.status, tokens, userinfo_status: userinfo.status, userinfo: await userinfo.json()};
}"""

CAN_READ = """async ([url, init]) => {
  try { const answer = await fetch(url, init); await answer.text(); return "read " + answer.status; }
  catch (error) { return "blocked: " + error; }
}"""


def test_a_single_page_app_exchanges_the_code_from_the_browser(page: Page, site: Site) -> None:
    """A public client's page calls /token and /userinfo itself (CORS for its redirect URI's
    origin, the userinfo call with a preflight); /authorize answers no CORS, and a page of an
    origin that is no public client's cannot read /token."""
    request = authorization_request(site.issuer, site.spa, site.callback)
    open_authorize(page, request.url)
    log_in(page, "alice")
    params = landed(page, site.callback)
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": request.redirect_uri,
        "code_verifier": request.verifier,
        "client_id": site.spa,
    }
    result = page.evaluate(SPA_EXCHANGE, [site.issuer, form])  # in the app's page, at its origin
    assert result["status"] == 200, result
    assert result["tokens"]["id_token"] and result["tokens"]["refresh_token"]
    assert result["userinfo_status"] == 200
    assert result["userinfo"]["sub"] == site.subjects["alice"]
    assert result["userinfo"]["preferred_username"] == "alice"
    # the authorization endpoint never answers CORS: the app's script cannot read it
    verdict = page.evaluate(CAN_READ, [request.url, {}])
    assert verdict.startswith("blocked"), verdict
    # a page of another origin (an opaque one here) cannot read /token
    page.goto("about:blank")
    refused: dict[str, Any] = {
        "method": "POST",
        "body": f"grant_type=refresh_token&client_id={site.spa}&refresh_token=x",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    }
    verdict = page.evaluate(CAN_READ, [site.issuer + "/token", refused])
    assert verdict.startswith("blocked"), verdict
    # while the app's own origin can (the control: the same call, read)
    page.goto(site.callback)
    assert page.evaluate(CAN_READ, [site.issuer + "/token", refused]) == "read 400"
