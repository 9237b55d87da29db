"""Authlib's OAuth 2 client, unmodified, through the authorization code flow with PKCE (S256)
against a real ``issuer serve`` process: a public client (``token_endpoint_auth_method: none``)
and a confidential one (``client_secret_basic``). The user signs in in headless Chromium; Authlib
builds the authorization URL, checks the state, exchanges the code and refreshes the tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from playwright.sync_api import Browser, Page

from tests import support
from tests.browser import harness


@dataclass(frozen=True)
class Site:
    issuer: str
    callback: str
    public: str
    confidential: str
    secret: str
    subject: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("authlib-code")
    env = support.issuer_env(f"sqlite:///{tmp / 'issuer.db'}", tmp / "keys")
    harness.migrate(env)
    with harness.client_app() as app:
        public, _ = harness.create_client(env, "Spa", redirect_uri="http://127.0.0.1/cb")
        confidential, secret = harness.create_client(
            env, "Web", redirect_uri="http://127.0.0.1/cb", public=False
        )
        assert secret
        subject = harness.add_user(env, "alice")
        with support.running_server(env, tmp / "server.log") as server:
            yield Site(server.url, app + "/cb", public, confidential, secret, subject)


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator[Browser]:  # after the site: see harness.cli
    with harness.chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    with harness.fresh_page(chromium) as page:
        yield page


def _authorize(page: Page, site: Site, oauth: OAuth2Client, verifier: str) -> tuple[str, str]:
    """Authlib's authorization URL, the user's sign-in in the browser; (callback URL, state)."""
    url, state = oauth.create_authorization_url(
        site.issuer + "/authorize", code_verifier=verifier, nonce=generate_token(20)
    )
    harness.open_authorize(page, url)
    if harness.on_login_page(page):
        harness.log_in(page, "alice")
    params = harness.landed(page, site.callback)
    assert params["state"] == state and params["iss"] == site.issuer
    return page.url, state


@pytest.mark.parametrize("kind", ["public", "confidential"])
def test_authlib_code_pkce_then_refresh(page: Page, site: Site, kind: str) -> None:
    if kind == "public":
        client_id, secret, method = site.public, None, "none"
    else:
        client_id, secret, method = site.confidential, site.secret, "client_secret_basic"
    verifier = generate_token(48)
    with OAuth2Client(
        client_id,
        secret,
        token_endpoint_auth_method=method,
        scope="openid profile read",
        redirect_uri=site.callback,
        code_challenge_method="S256",
    ) as oauth:
        callback, state = _authorize(page, site, oauth, verifier)
        token = oauth.fetch_token(
            site.issuer + "/token", authorization_response=callback, state=state, code_verifier=verifier
        )
        assert token["token_type"].lower() == "bearer"
        claims = harness.id_token_claims(
            site.issuer, token["id_token"], issuer=site.issuer, client_id=client_id
        )
        assert claims["sub"] == site.subject

        # Authlib's refresh (same auth method); the rotated token replaces the old one
        first_refresh = token["refresh_token"]
        rotated = oauth.refresh_token(site.issuer + "/token", refresh_token=first_refresh)
        assert rotated["access_token"] != token["access_token"]
        assert rotated["refresh_token"] != first_refresh

        # the code was spent: Authlib sees invalid_grant on a second exchange
        with pytest.raises(OAuthError) as replay:
            oauth.fetch_token(
                site.issuer + "/token", authorization_response=callback, state=state, code_verifier=verifier
            )
        assert replay.value.error == "invalid_grant"


def test_authlib_wrong_verifier_is_refused(page: Page, site: Site) -> None:
    verifier = generate_token(48)
    with OAuth2Client(
        site.public,
        None,
        token_endpoint_auth_method="none",
        scope="openid read",
        redirect_uri=site.callback,
        code_challenge_method="S256",
    ) as oauth:
        callback, state = _authorize(page, site, oauth, verifier)
        with pytest.raises(OAuthError) as refused:
            oauth.fetch_token(
                site.issuer + "/token",
                authorization_response=callback,
                state=state,
                code_verifier=generate_token(48),  # not the one the challenge was made from
            )
        assert refused.value.error == "invalid_grant"
