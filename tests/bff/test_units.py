"""The BFF's pure parts: ``return_to`` (no open redirect), the refresh schedule, the login cookie,
and the plugin mounted in another Litestar app (in process, no issuer needed for these paths)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from issuer.bff.app import BffPlugin
from issuer.bff.proxy import _as_sent
from issuer.bff.redirects import safe_return_to
from issuer.bff.sessions import LoginState, Sealer, Tokens
from issuer.bff.settings import load
from issuer.keys.material import b64encode


@pytest.mark.parametrize(
    "value",
    [
        "//evil.example",
        "//evil.example/path",
        "https://evil.example",
        "HTTPS://evil.example",
        "javascript:alert(1)",
        "/\\evil.example",
        "\\\\evil.example",
        "/a\\b",
        "evil.example",
        "http:/evil.example",
        "/\x00",
        "/\n/evil.example",
        "/\t/evil.example",
        "/ümlaut",
        "/" + "a" * 3000,
    ],
)
def test_return_to_refuses_anything_but_a_same_origin_path(value: str) -> None:
    assert safe_return_to(value) is None


@pytest.mark.parametrize("value", ["/", "/app", "/app/page?tab=1#top", "/a%2F%2Fb", "/%5Cx"])
def test_return_to_accepts_paths(value: str) -> None:
    assert safe_return_to(value) == value


def test_return_to_defaults_to_the_root() -> None:
    assert safe_return_to(None) == "/" and safe_return_to("") == "/"


@pytest.mark.parametrize(
    ("lifetime", "leeway", "due_at"),
    [(300, 30, 270), (10, 30, 5), (10, 2, 8), (300, 0, 300)],
)
def test_a_refresh_is_due_leeway_before_expiry_at_most_half_the_lifetime(
    lifetime: int, leeway: int, due_at: int
) -> None:
    tokens = Tokens(access_token="a", expires_at=1000 + lifetime, obtained_at=1000)
    assert not tokens.refresh_due(1000 + due_at - 1, leeway)
    assert tokens.refresh_due(1000 + due_at, leeway)


def test_the_login_cookie_is_sealed_and_expires() -> None:
    sealer = Sealer(secrets.token_bytes(32))
    state = LoginState(state="s", nonce="n", verifier="v" * 64, return_to="/x", expires_at=2000)
    cookie = sealer.seal_login(state)
    assert "v" * 16 not in cookie and sealer.open_login(cookie, 1999) == state
    assert sealer.open_login(cookie, 2000) is None  # expired
    assert Sealer(secrets.token_bytes(32)).open_login(cookie, 1000) is None  # another key
    assert sealer.open_login(cookie[:-2] + "AA", 1000) is None  # tampered
    assert sealer.open_login("not base64 !", 1000) is None
    # a session's sealed tokens are not a login state (separate associated data)
    sealed = sealer.seal_tokens(Tokens(access_token="a", expires_at=1), b"\x00" * 32)
    assert sealer.open_login(b64encode(sealed), 0) is None


async def test_the_plugin_mounts_in_another_litestar_app(tmp_path: Path) -> None:
    @get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    settings = load(
        {
            "BFF_URL": "http://127.0.0.1:1",
            "BFF_ISSUER_URL": "http://127.0.0.1:2",
            "BFF_CLIENT_ID": "cl_x",
            "BFF_CLIENT_SECRET": "secret",
            "BFF_UPSTREAMS": "/api=http://127.0.0.1:3",
            "BFF_DATABASE_URL": f"sqlite:///{tmp_path / 'bff.db'}",
            "BFF_KEYS_DIR": str(tmp_path / "keys"),
        }
    )
    app = Litestar(route_handlers=[hello], plugins=[BffPlugin(settings)])
    async with AsyncTestClient(app) as client:
        assert (await client.get("/hello")).json() == {"hello": "world"}
        assert (await client.get("/bff/user")).status_code == 401
        assert (await client.get("/api/x")).status_code == 403  # no X-CSRF
        assert (await client.get("/api/x", headers={"x-csrf": "1"})).status_code == 401  # no session
        assert (await client.get("/bff/healthz")).status_code == 200
        assert (await client.get("/healthz")).status_code == 404  # the host app's namespace is its own
        ready = await client.get("/bff/readyz")
        assert ready.status_code == 503 and ready.json()["failing"] == ["issuer"]


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [("/a/%2Fb", "/a/%2Fb"), ("q=a%20b&c=~", "q=a%20b&c=~"), ("/caf\xe9", "/caf%E9"), ("/\xff?", "/%FF?")],
)
def test_the_path_goes_on_as_sent_in_ascii(sent: str, forwarded: str) -> None:
    assert _as_sent(sent) == forwarded  # latin-1 text of the browser's bytes; above 0x7F: %XX
