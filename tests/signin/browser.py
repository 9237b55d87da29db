"""An HTTP-level browser for the sign-in tests: the Litestar app over a real database, and a
cookie jar of its own (httpx would not send ``Secure`` cookies over http, so the cookies are
kept here and sent explicitly, per browser)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from issuer.app import create_app
from issuer.runtime import Runtime
from issuer.signin.pkce import s256

REDIRECT = "https://app.example/cb"
LOGOUT_REDIRECT = "https://app.example/bye"
PASSWORD = "correct horse battery staple"


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.buttons: list[tuple[str | None, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "input" and named.get("name"):
            self.inputs[str(named["name"])] = named.get("value") or ""
        if tag == "button":
            self.buttons.append((named.get("name"), named.get("value")))


def form_fields(html: str) -> _Inputs:
    parser = _Inputs()
    parser.feed(html)
    return parser


@dataclass
class Browser:
    http: httpx.AsyncClient
    cookies: dict[str, str] = field(default_factory=dict)

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for line in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def _headers(self) -> dict[str, str]:
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    async def get(self, url: str, **params: Any) -> httpx.Response:
        response = await self.http.get(
            url, params=params or None, headers=self._headers(), follow_redirects=False
        )
        return self._keep(response)

    async def post(self, url: str, data: dict[str, str]) -> httpx.Response:
        response = await self.http.post(
            url,
            content=urlencode(data),
            headers={**self._headers(), "content-type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )
        return self._keep(response)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def auth_params(client_id: str, **extra: str | None) -> dict[str, str]:
    _, challenge = pkce()
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid read",
        "state": "st-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def location_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 303, (response.status_code, response.text)
    query = urlsplit(response.headers["location"]).query
    return {k: v[0] for k, v in parse_qs(query).items()}


async def new_client(runtime: Runtime, *, first_party: bool = True, **kwargs: Any) -> str:
    options: dict[str, Any] = {
        "name": "Spa",
        "grant_types": ["authorization_code", "refresh_token"],
        "scopes": ["openid", "read", "write"],
        "redirect_uris": [REDIRECT],
        "post_logout_redirect_uris": [LOGOUT_REDIRECT],
        "public": True,
        "first_party": first_party,
    }
    options.update(kwargs)
    return (await runtime.clients.create(**options)).client_id


@asynccontextmanager
async def app_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app on this test's event loop (its lifespan starts and closes ``runtime``), so that the
    test may use the runtime's database pool too."""
    app = create_app(runtime=runtime)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://issuer.test") as http:
            yield http


async def sign_in(
    browser: Browser, client_id: str, username: str = "alice", **extra: str | None
) -> httpx.Response:
    """authorize → login page → POST /login; returns the POST's answer."""
    response = await browser.get("/authorize", **auth_params(client_id, **extra))
    assert response.status_code == 303, response.text
    login_url = response.headers["location"]
    assert login_url.startswith("/login?request="), login_url
    page = await browser.get(login_url)
    assert page.status_code == 200, page.text
    fields = form_fields(page.text).inputs
    return await browser.post(
        "/login",
        {"username": username, "password": PASSWORD, "request": fields["request"], "csrf": fields["csrf"]},
    )
