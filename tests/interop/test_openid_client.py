"""panva's ``openid-client`` for Node (unmodified, pinned in package.json) as a relying party of a
real ``issuer serve`` process: discovery, the authorization URL with PKCE + nonce + state, the
user's sign-in in headless Chromium, then the code exchange (openid-client validates the id_token
against the JWKS, with the nonce, and the ``iss`` of the authorization response), userinfo and a
refresh. The script is ``oidc_client.mjs``; it prints JSON that this test checks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page

from tests import support
from tests.browser import harness

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Site:
    issuer: str
    callback: str
    client_id: str
    subject: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("openid-client")
    env = support.issuer_env(f"sqlite:///{tmp / 'issuer.db'}", tmp / "keys")
    harness.migrate(env)
    with harness.client_app() as app:
        client_id, _ = harness.create_client(env, "Node app", redirect_uri="http://127.0.0.1/cb")
        subject = harness.add_user(env, "alice")
        with support.running_server(env, tmp / "server.log") as server:
            yield Site(server.url, app + "/cb", client_id, subject)


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator[Browser]:  # after the site: see harness.cli
    with harness.chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    with harness.fresh_page(chromium) as page:
        yield page


def _relying_party(site: Site, page: Page, tamper: str | None = None) -> tuple[int, dict[str, Any], str]:
    node = shutil.which("node")
    assert node, "Node.js is needed for the openid-client interop test"
    assert (HERE / "node_modules" / "openid-client").is_dir(), (
        "run `npm ci` in tests/interop (scripts/test does)"
    )
    proc = subprocess.Popen(
        [node, str(HERE / "oidc_client.mjs"), site.issuer, site.client_id, site.callback],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        start = json.loads(proc.stdout.readline() or "{}")
        assert "authorization_url" in start, (start, proc.stderr.read() if proc.stderr else "")
        assert start["authorization_url"].startswith(site.issuer + "/authorize?")
        harness.open_authorize(page, start["authorization_url"])
        harness.log_in(page, "alice")
        params = harness.landed(page, site.callback)
        assert params["state"] == start["state"]
        callback = page.url if tamper is None else f"{site.callback}?{urlencode({**params, 'iss': tamper})}"
        stdout, stderr = proc.communicate(callback + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, json.loads(stdout.strip().splitlines()[-1]), start["nonce"] + stderr


def test_openid_client_discovery_pkce_nonce_id_token_userinfo(page: Page, site: Site) -> None:
    code, result, nonce = _relying_party(site, page)
    assert code == 0, result
    assert result["issuer"] == site.issuer
    claims = result["claims"]
    assert claims["iss"] == site.issuer and claims["aud"] == site.client_id
    assert claims["sub"] == site.subject and claims["nonce"] == nonce
    assert claims["sid"] and isinstance(claims["auth_time"], int)
    assert result["userinfo"]["sub"] == site.subject
    assert result["userinfo"]["preferred_username"] == "alice"
    assert result["token_type"].lower() == "bearer"
    assert set(result["scope"].split()) == {"openid", "profile", "read"}
    assert result["refreshed"] is True
    assert result["end_session_url"].startswith(site.issuer + "/logout?")


def test_openid_client_refuses_a_response_from_another_issuer(page: Page, site: Site) -> None:
    """RFC 9207: the ``iss`` of the authorization response is what a mix-up defence checks; a
    response claiming another issuer is refused by the client before any code exchange."""
    code, result, _ = _relying_party(site, page, tamper="https://evil.example")
    assert code == 1 and result["code"] == "OAUTH_INVALID_RESPONSE", result
    assert '"iss"' in result["cause"], result
