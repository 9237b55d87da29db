"""The BFF in a real browser: headless Chromium (Debian's package) under Playwright, a small SPA
served from ``BFF_STATIC_DIR`` that calls the test upstream through the proxy with
``fetch(..., {headers: {"X-CSRF": "1"}})``; the upstream verifies the bearer token with
``issuer_verify`` and echoes its ``sub`` (issue 11, "Tests that must exist").

Checks: the login through the issuer's page, the call works, ``document.cookie``,
``localStorage`` and ``sessionStorage`` hold no token, no response the page can read carries
one, a call without ``X-CSRF`` is refused, and with a 10-second access token calls keep working
past its expiry (ten at once from the page, one refresh).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Response

from tests import support
from tests.bff.support import TOKEN_SHAPES, BffProcess, Upstream
from tests.bff.support import issuer_env as bff_issuer_env
from tests.browser import harness

INDEX = """<!doctype html>
<meta charset="utf-8"><title>spa</title>
<p id="state">loading</p>
<script>
async function call(path, headers) {
  const answer = await fetch(path, {headers: headers === undefined ? {"X-CSRF": "1"} : headers});
  return {status: answer.status, body: await answer.text()};
}
fetch("/bff/user").then(r => r.json()).then(u => {
  document.getElementById("state").textContent = u.sub ? "signed in as " + u.sub : "signed out";
});
</script>
"""


@dataclass
class Site:
    bff: str
    subject: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("bff-browser")
    env = bff_issuer_env(directory, ISSUER_ACCESS_TOKEN_TTL="10")
    static = directory / "spa"
    static.mkdir()
    (static / "index.html").write_text(INDEX)
    port = support.free_port()
    bff_url = f"http://127.0.0.1:{port}"
    with support.running_server(env, directory / "issuer.log") as issuer:
        env["ISSUER_URL"] = issuer.url
        client_id, secret = support.register_client(
            env,
            "--redirect-uri",
            bff_url + "/bff/callback",
            "--first-party",
            name="spa-bff",
            grants=("authorization_code", "refresh_token"),
            scope="openid read",
        )
        subject = support.add_user(env)
        upstream = Upstream(issuer.url, directory / "upstream.log").start()
        bff_env = {k: v for k, v in env.items() if not k.startswith("ISSUER_")}
        bff_env.update(
            BFF_URL=bff_url,
            BFF_ISSUER_URL=issuer.url,
            BFF_CLIENT_ID=client_id,
            BFF_CLIENT_SECRET=secret,
            BFF_SCOPE="openid read",
            BFF_UPSTREAMS=f"/api={upstream.url}",
            BFF_STATIC_DIR=str(static),
            BFF_DATABASE_URL=f"sqlite:///{directory / 'bff.db'}",
            BFF_KEYS_DIR=str(directory / "bff-keys"),
            BFF_REFRESH_LEEWAY="2",
        )
        bff = BffProcess(bff_env, port, directory / "bff.log").start()
        try:
            yield Site(bff_url, subject)
        finally:
            bff.stop()
            upstream.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with harness.chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    with harness.fresh_page(chromium) as page:
        yield page


def _sign_in(page: Page, site: Site) -> list[Response]:
    """The SPA's login: /bff/login → the issuer's page → back at the SPA; every response kept."""
    seen: list[Response] = []

    def keep(response: Response) -> None:
        seen.append(response)

    page.on("response", keep)
    page.goto(f"{site.bff}/bff/login?return_to=/index.html", timeout=harness.TIMEOUT_MS)
    harness.log_in(page)
    page.wait_for_url(f"{site.bff}/index.html", timeout=harness.TIMEOUT_MS)
    page.wait_for_function(
        "document.getElementById('state').textContent !== 'loading'", timeout=harness.TIMEOUT_MS
    )
    return seen


def _call(page: Page, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    args = {"path": path, "headers": headers}
    result: dict[str, Any] = page.evaluate(
        "args => call(args.path, args.headers === null ? undefined : args.headers)", args
    )
    return result


def _readable(seen: list[Response], origin: str) -> str:
    """Everything the page's origin could read of the BFF's responses: headers and bodies."""
    parts = []
    for response in seen:
        if not response.url.startswith(origin):
            continue
        parts.append(json.dumps(response.headers))
        if response.status < 300 or response.status >= 400:
            try:
                parts.append(response.text())
            except Exception:  # a body the browser did not keep (a navigation that went on)
                pass
    return "\n".join(parts)


def test_the_spa_calls_the_api_and_holds_no_token(site: Site, page: Page) -> None:
    seen = _sign_in(page, site)
    assert page.text_content("#state") == f"signed in as {site.subject}"
    answer = _call(page, "/api/echo")
    assert answer["status"] == 200, answer
    assert json.loads(answer["body"])["sub"] == site.subject
    # nothing the page's script can reach holds a token
    assert page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("sessionStorage.length") == 0
    assert TOKEN_SHAPES.search(_readable(seen, site.bff)) is None
    cookies = {c["name"]: c for c in page.context.cookies(site.bff)}
    session = cookies["__Host-bff-session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert "__Host-bff-login" not in cookies
    assert all(TOKEN_SHAPES.search(c["value"]) is None for c in cookies.values())


def test_a_call_without_the_csrf_header_is_refused(site: Site, page: Page) -> None:
    _sign_in(page, site)
    assert _call(page, "/api/echo", {})["status"] == 403
    assert _call(page, "/elsewhere/echo")["status"] == 404


def test_calls_keep_working_past_the_access_tokens_expiry(site: Site, page: Page) -> None:
    seen = _sign_in(page, site)
    first = json.loads(_call(page, "/api/one")["body"])
    deadline = time.monotonic() + 60
    while time.time() <= first["exp"] + 0.5:  # wait out the 10-second token
        assert time.monotonic() < deadline
        time.sleep(0.2)
    answers = page.evaluate("Promise.all(Array.from({length: 10}, () => call('/api/two')))")
    assert [a["status"] for a in answers] == [200] * 10, answers
    jtis = {json.loads(a["body"])["jti"] for a in answers}
    assert len(jtis) == 1 and first["jti"] not in jtis  # refreshed once, for all ten
    assert TOKEN_SHAPES.search(_readable(seen, site.bff)) is None
