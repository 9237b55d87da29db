"""CORS on the token-side endpoints (issuer.http.cors, issuer.signin.origins): public clients'
redirect URI origins only, never credentials, never on the authorization endpoint or the pages."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from issuer.clients import ClientDirectory
from issuer.errors import TemporarilyUnavailable
from issuer.runtime import Runtime
from issuer.signin.origins import OriginSet, origin_of, parse_origin
from tests.signin.browser import PASSWORD, Browser, app_client, auth_params, new_client, sign_in

pytestmark = pytest.mark.asyncio

APP = "https://app.example"  # the origin of tests.signin.browser.REDIRECT
TOKEN_SIDE = ("/token", "/revoke", "/userinfo")
DOCUMENTS = (
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/.well-known/jwks.json",
)
PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}


def _cors(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def _call(http: httpx.AsyncClient, path: str, origin: str) -> httpx.Response:
    headers = {"origin": origin}
    if path == "/userinfo":
        return await http.get(path, headers=headers)
    return await http.post(path, data={"grant_type": "nope", "client_id": "cli_x"}, headers=headers)


async def test_an_allowed_origin_gets_cors_on_every_token_side_answer(signin_runtime: Runtime) -> None:
    await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        for path in TOKEN_SIDE:
            response = await _call(http, path, APP)  # refusals too: the app must read the error
            assert response.status_code in (400, 401), (path, response.text)
            assert response.headers["access-control-allow-origin"] == APP, path
            assert "Origin" in response.headers.get_list("vary"), path
            assert "WWW-Authenticate" in response.headers["access-control-expose-headers"]
            # never credentials: these endpoints take no cookies
            assert "access-control-allow-credentials" not in response.headers, path
            preflight = await http.options(path, headers={"origin": APP, **PREFLIGHT})
            assert preflight.status_code == 204, path
            assert preflight.headers["access-control-allow-origin"] == APP
            assert set(preflight.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
            allowed = preflight.headers["access-control-allow-headers"].lower().split(", ")
            assert set(allowed) == {"authorization", "content-type"}
            assert "access-control-allow-credentials" not in preflight.headers


async def test_a_successful_exchange_and_userinfo_carry_cors(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        answer = await http.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": "irt_x", "client_id": client_id},
            headers={"origin": APP},
        )
        assert answer.headers["access-control-allow-origin"] == APP
        minted = signin_runtime.grants.minter.mint(
            subject=await _subject(signin_runtime),
            client_id=client_id,
            audience=("x",),
            scope="openid",
            ttl=60,
        )
        info = await http.get("/userinfo", headers={"origin": APP, "authorization": f"Bearer {minted.token}"})
    assert info.status_code == 200
    assert info.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-credentials" not in info.headers


async def _subject(runtime: Runtime) -> str:
    async with runtime.db.transaction() as conn:
        row = await runtime.users.store.by_username(conn, "alice")
    assert row is not None
    return str(row.id)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://app.example",  # another scheme is another origin
        "https://app.example:8443",  # another port on a non-loopback host
        "https://app.example.evil.example",
        "https://APP.example",  # browsers serialise lower case; nothing else is an origin
        "null",
        "https://app.example/cb",
    ],
)
async def test_other_origins_get_no_cors_header(signin_runtime: Runtime, origin: str) -> None:
    await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        for path in TOKEN_SIDE:
            response = await _call(http, path, origin)
            assert not _cors(response), (path, origin)
            assert "Origin" in response.headers.get_list("vary")
            # a refused preflight is the plain 204, with no CORS header: the browser stops there
            preflight = await http.options(path, headers={"origin": origin, **PREFLIGHT})
            assert preflight.status_code == 204
            assert not _cors(preflight), (path, origin)


async def test_a_confidential_clients_origin_is_not_allowed(signin_runtime: Runtime) -> None:
    await signin_runtime.clients.create(
        name="web",
        grant_types=["authorization_code"],
        scopes=["openid"],
        redirect_uris=["https://server.example/cb"],
    )
    await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        confidential = await _call(http, "/token", "https://server.example")
        public = await _call(http, "/token", APP)
    assert not _cors(confidential)
    assert public.headers["access-control-allow-origin"] == APP


async def test_a_loopback_redirect_allows_its_host_on_any_port(signin_runtime: Runtime) -> None:
    await new_client(signin_runtime, redirect_uris=["http://127.0.0.1/cb", "com.example.app:/cb"])
    async with app_client(signin_runtime) as http:
        for origin in ("http://127.0.0.1:53123", "http://127.0.0.1"):
            response = await _call(http, "/token", origin)
            assert response.headers["access-control-allow-origin"] == origin
        for origin in ("http://localhost:53123", "https://127.0.0.1:53123", "http://127.0.0.2:1"):
            assert not _cors(await _call(http, "/token", origin)), origin


async def test_the_authorization_endpoint_and_pages_never_send_cors(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        browser = Browser(http)
        origin = {"origin": APP}
        answers = [
            await http.get("/authorize", params=auth_params(client_id), headers=origin),
            await http.post("/authorize", data=auth_params(client_id), headers=origin),
            await http.options("/authorize", headers={**origin, **PREFLIGHT}),
            await http.get("/login", headers=origin),
            await http.options("/login", headers={**origin, **PREFLIGHT}),
            await http.get("/consent", headers=origin),
            await http.get("/logout", headers=origin),
            await http.options("/logout", headers={**origin, **PREFLIGHT}),
            await http.post("/introspect", data={"token": "x"}, headers=origin),
            await http.get("/healthz", headers=origin),
        ]
        assert (await sign_in(browser, client_id)).status_code == 303
    # an allowed origin, yet nothing: a page's answer must never be readable cross-origin
    for response in answers:
        assert not _cors(response), (response.request.method, response.request.url.path)


async def test_discovery_documents_answer_any_origin_with_a_star(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        for path in DOCUMENTS:
            response = await http.get(path, headers={"origin": "https://anyone.example"})
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in response.headers
            preflight = await http.options(path, headers={"origin": "https://anyone.example", **PREFLIGHT})
            assert preflight.headers["access-control-allow-origin"] == "*"
            plain = await http.get(path)  # no Origin: no CORS header
            assert not _cors(plain)


async def test_registration_changes_reach_the_origins(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        assert not _cors(await _call(http, "/token", "https://new.example"))
        # a change made through this process: effective at once
        client_id = await new_client(signin_runtime, redirect_uris=["https://new.example/cb"])
        assert (await _call(http, "/token", "https://new.example")).headers[
            "access-control-allow-origin"
        ] == "https://new.example"
        await signin_runtime.clients.set_disabled(client_id, True)
        assert not _cors(await _call(http, "/token", "https://new.example"))
        # a change made elsewhere (another instance, the CLI): within ISSUER_CLIENT_CACHE_TTL
        elsewhere = ClientDirectory(
            signin_runtime.db,
            signin_runtime.material.hmac_key,
            default_audience="x",
            cache_ttl=0,
        )
        await elsewhere.create(
            name="other",
            grant_types=["authorization_code"],
            scopes=["openid"],
            redirect_uris=["https://other.example/cb"],
            public=True,
        )
        deadline = time.monotonic() + signin_runtime.settings.client_cache_ttl + 20
        while not _cors(await _call(http, "/token", "https://other.example")):
            assert time.monotonic() < deadline, "a new client's origin never became allowed"
            await asyncio.sleep(0.2)


async def test_requests_without_origin_cost_no_lookup(signin_runtime: Runtime) -> None:
    await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        for _ in range(3):
            await http.post("/token", data={"grant_type": "nope"})
        assert signin_runtime.origins.loads == 0
        for _ in range(3):
            await _call(http, "/token", APP)
        assert signin_runtime.origins.loads == 1  # one query, then the cached set


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_origin_parsing(signin_runtime: Runtime) -> None:
    assert origin_of("https://App.Example:443/cb?x=1") == "https://app.example"
    assert origin_of("https://app.example:8443/cb") == "https://app.example:8443"
    assert origin_of("http://[::1]:8080/cb") == "http://[::1]:8080"
    assert origin_of("com.example.app:/cb") is None
    assert parse_origin("https://app.example:443") is None  # browsers omit the default port
    assert parse_origin("http://[::1]:5000") == ("http", "::1", 5000)
    allowed = OriginSet.from_redirect_uris(["http://[::1]/cb", "https://a.example/x"])
    assert allowed.allows("http://[::1]:5000") and allowed.allows("https://a.example")
    assert not allowed.allows("http://[::2]:5000") and not allowed.allows("https://a.example:1")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_unreadable_client_table_means_no_cors(
    signin_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await new_client(signin_runtime)

    async def outage(conn: object) -> tuple[str, ...]:
        raise TemporarilyUnavailable(detail="database: test outage")

    async with app_client(signin_runtime) as http:
        monkeypatch.setattr(signin_runtime.clients.store, "public_redirect_uris", outage)
        response = await _call(http, "/token", APP)
    # fail closed: the answer stands, without a CORS header
    assert response.status_code == 401
    assert not _cors(response)
