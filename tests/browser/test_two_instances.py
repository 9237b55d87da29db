"""Browser sign-in across two ``issuer serve`` instances on one PostgreSQL database and one Redis
prefix (one issuer identifier), as behind a load balancer: the login on instance A, the code
exchanged at B (and its replay at A revoking what B issued), single sign-on at B, the refresh
token rotated at A, and a logout at B that ends
the session and its tokens on both.

Both instances listen on 127.0.0.1 (other ports); cookies are per host, not per port, so the
browser brings the same issuer cookies to either, as it would to one name behind a balancer.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from tests import support
from tests.browser import harness

ISSUER = "https://issuer.test"


def test_login_on_one_instance_code_and_logout_on_the_other(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_URL=ISSUER,
        **key_env,
    )
    with harness.client_app() as app:
        callback, bye = app + "/cb", app + "/bye"
        client_id, _ = harness.create_client(
            env, "Spa", redirect_uri="http://127.0.0.1/cb", post_logout_redirect_uri=bye
        )
        subject = harness.add_user(env, "alice")
        with (
            support.running_server(env, tmp_path / "a.log") as a,
            support.running_server(env, tmp_path / "b.log") as b,
            sync_playwright() as playwright,  # after the set-up: see harness.cli
        ):
            browser = harness.launch(playwright)
            try:
                page = browser.new_context().new_page()
                page.set_default_timeout(harness.TIMEOUT_MS)

                # the login on A ...
                request = harness.authorization_request(a.url, client_id, callback)
                harness.open_authorize(page, request.url)
                harness.log_in(page, "alice")
                params = harness.landed(page, callback)
                assert params["iss"] == ISSUER and params["state"] == request.state
                # ... and the code exchanged at B
                exchanged = harness.exchange(b.url, client_id, request, params["code"])
                assert exchanged.status_code == 200, exchanged.text
                tokens = exchanged.json()
                claims = harness.id_token_claims(
                    b.url, tokens["id_token"], issuer=ISSUER, client_id=client_id
                )
                assert claims["sub"] == subject and claims["nonce"] == request.nonce
                # the code is spent everywhere: a replay at A fails and revokes what B issued
                replay = harness.exchange(a.url, client_id, request, params["code"])
                assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
                revoked = harness.refresh(b.url, client_id, tokens["refresh_token"])
                assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"

                # single sign-on at B: the session A started is B's too (no login page)
                sso = harness.authorization_request(b.url, client_id, callback)
                harness.open_authorize(page, sso.url)
                params = harness.landed(page, callback)
                assert params["state"] == sso.state
                exchanged = harness.exchange(b.url, client_id, sso, params["code"])
                assert exchanged.status_code == 200, exchanged.text
                tokens = exchanged.json()
                again = harness.id_token_claims(a.url, tokens["id_token"], issuer=ISSUER, client_id=client_id)
                assert again["sid"] == claims["sid"] and again["auth_time"] == claims["auth_time"]

                # the refresh token rotated at A
                rotated = harness.refresh(a.url, client_id, tokens["refresh_token"])
                assert rotated.status_code == 200, rotated.text
                current = rotated.json()
                bearer = {"authorization": "Bearer " + current["access_token"]}
                assert support.get(a.url + "/userinfo", headers=bearer).status_code == 200

                # the logout at B ...
                logout = (
                    b.url
                    + "/logout?"
                    + urlencode(
                        {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": bye, "state": "s1"}
                    )
                )
                page.goto(logout)
                assert harness.landed(page, bye) == {"state": "s1"}
                # ... ends it everywhere: the rotated refresh token is dead at A and at B,
                for url in (a.url, b.url):
                    dead = harness.refresh(url, client_id, current["refresh_token"])
                    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
                # its access token is refused on both (its sid is on the shared denylist),
                for url in (a.url, b.url):
                    assert support.get(url + "/userinfo", headers=bearer).status_code == 401
                # and A asks for the password again
                harness.open_authorize(page, harness.authorization_request(a.url, client_id, callback).url)
                assert harness.on_login_page(page), page.url
            finally:
                browser.close()
