"""What the real-browser tests share: Debian's Chromium under Playwright, a loopback client app
that receives the redirects, the operator's CLI for clients, and the steps of a sign-in.

Chromium comes from Debian's ``chromium`` package (``playwright install`` cannot download
browsers here); scripts/test installs it when it is missing, and a test that finds no browser
fails with the command that installs it (it never skips).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests import support

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "apt-get update && apt-get install -y chromium  (as root; scripts/test does this)"
SESSION_COOKIE = "__Host-issuer-session"
REQUEST_COOKIE = "__Host-issuer-request"
TIMEOUT_MS = 20_000  # a generous ceiling for one navigation on a busy machine, never a timing assertion


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium from Debian's package; a missing browser is a failure, with the fix."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium: {INSTALL_HINT}")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@contextmanager
def chromium() -> Iterator[Browser]:
    """One launched browser (a module's fixture), closed at the end."""
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def fresh_page(browser: Browser) -> Iterator[Page]:
    """A page in a new browser context (no cookies, no storage), closed with its context."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


class _App(BaseHTTPRequestHandler):
    """The client app's loopback server: every path answers a small page (the browser lands there)."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>client app</title><p>back at the app</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def client_app() -> Iterator[str]:
    """A loopback HTTP server (the client app's redirect target); yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def cli(env: dict[str, str], *args: str, input: str | None = None) -> str:
    """The operator's ``issuer`` command, run in this process (click's runner: a subprocess per
    command would cost seconds each on a busy machine); returns its standard output.

    Set up a site before the browser starts: Playwright's sync API keeps an event loop running in
    this thread while a browser is open, and the commands run their own (``asyncio.run``)."""
    result = support.run_cli_here(env, *args, input=input)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def migrate(env: dict[str, str]) -> None:
    cli(env, "db", "upgrade")


def add_user(env: dict[str, str], username: str, password: str = support.PASSWORD) -> str:
    """``issuer users create``; returns the user's subject."""
    return (
        cli(env, "users", "create", "--username", username, input=password + "\n")
        .split("subject ")[1]
        .strip()
    )


def create_client(
    env: dict[str, str],
    name: str,
    *,
    redirect_uri: str,
    post_logout_redirect_uri: str | None = None,
    public: bool = True,
    first_party: bool = True,
    scope: str = "openid profile read",
) -> tuple[str, str | None]:
    """``issuer clients create`` for a browser client; returns (client_id, client_secret or None)."""
    args = ["clients", "create", "--json", "--name", name, "--scope", scope, "--redirect-uri", redirect_uri]
    args += ["--grant", "authorization_code", "--grant", "refresh_token"]
    if post_logout_redirect_uri:
        args += ["--post-logout-redirect-uri", post_logout_redirect_uri]
    if public:
        args.append("--public")
    if first_party:
        args.append("--first-party")
    created = json.loads(cli(env, *args))
    return created["client_id"], created.get("client_secret")


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass(frozen=True)
class Request:
    """One authorization request, with what its exchange needs."""

    url: str
    state: str
    nonce: str
    verifier: str
    redirect_uri: str


def authorization_request(
    issuer: str, client_id: str, redirect_uri: str, scope: str = "openid profile read", **extra: str
) -> Request:
    verifier, challenge = pkce()
    state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return Request(f"{issuer}/authorize?{urlencode(params)}", state, nonce, verifier, redirect_uri)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def on_login_page(page: Page) -> bool:
    return urlsplit(page.url).path == "/login" and page.locator("input[name=password]").count() == 1


def on_consent_page(page: Page) -> bool:
    return urlsplit(page.url).path == "/consent" and page.locator("button[name=decision]").count() == 2


def log_in(page: Page, username: str = "alice", password: str = support.PASSWORD) -> None:
    """Fill the hosted login form and submit it, as a user would."""
    assert on_login_page(page), page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation(timeout=TIMEOUT_MS):
        page.click("button[type=submit]")


def open_authorize(page: Page, url: str) -> None:
    page.goto(url, timeout=TIMEOUT_MS)


def landed(page: Page, redirect_uri: str) -> dict[str, str]:
    """The browser is at the client's redirect URI: the parameters it brought."""
    assert page.url.split("?", 1)[0] == redirect_uri, page.url
    return query(page.url)


def exchange(
    issuer: str, client_id: str, request: Request, code: str, secret: str | None = None
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.redirect_uri,
        "code_verifier": request.verifier,
    }
    if secret is None:
        return support.post(issuer + "/token", data={**data, "client_id": client_id})
    return support.post(issuer + "/token", data=data, auth=(client_id, secret))


def refresh(issuer: str, client_id: str, refresh_token: str, secret: str | None = None) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if secret is None:
        return support.post(issuer + "/token", data={**data, "client_id": client_id})
    return support.post(issuer + "/token", data=data, auth=(client_id, secret))


def id_token_claims(jwks_from: str, token: str, *, issuer: str, client_id: str) -> dict[str, Any]:
    """Verify an id_token against the issuer's published JWKS (standard PyJWT, as a client would)."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT"
    keys = support.get(jwks_from + "/.well-known/jwks.json").json()["keys"]
    jwk = next(k for k in keys if k["kid"] == header["kid"])
    return dict(
        jwt.decode(
            token,
            jwt.PyJWK(jwk).key,
            algorithms=[jwk["alg"]],
            audience=client_id,
            issuer=issuer,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "auth_time", "sid"]},
        )
    )
