"""The UserInfo endpoint (OIDC Core 1.0, 5.3) and its Bearer token rules (RFC 6750 2.1, 3), on
both databases: tokens come from the real sign-in and code exchange."""

from __future__ import annotations

import secrets

import httpx
import pytest

from issuer.runtime import Runtime
from issuer.signin.pkce import s256
from tests.signin.browser import PASSWORD, REDIRECT, Browser, app_client, location_params, new_client, sign_in

pytestmark = pytest.mark.asyncio


async def _tokens(http: httpx.AsyncClient, client_id: str, *, scope: str = "openid read") -> dict[str, str]:
    """Sign alice in through /authorize and the login page, and exchange the code."""
    verifier = secrets.token_urlsafe(48)
    answer = await sign_in(Browser(http), client_id, code_challenge=s256(verifier), scope=scope)
    form = {
        "grant_type": "authorization_code",
        "code": location_params(answer)["code"],
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
    }
    response = await http.post("/token", data=form)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _refused(response: httpx.Response, status: int, error: str) -> str:
    """RFC 6750 3: the status, the error in the body and in WWW-Authenticate; no claims."""
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert "sub" not in response.json()
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="issuer"')
    assert f'error="{error}"' in challenge
    assert response.headers["cache-control"] == "no-store"
    return challenge


async def test_userinfo_answers_sub_and_preferred_username(signin_runtime: Runtime) -> None:
    subject = await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        tokens = await _tokens(http, client_id)
        got = await http.get("/userinfo", headers=_bearer(tokens["access_token"]))
        posted = await http.post("/userinfo", headers=_bearer(tokens["access_token"]))
    for response in (got, posted):
        assert response.status_code == 200, response.text
        assert response.json() == {"sub": subject, "preferred_username": "alice"}
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-type"] == "application/json"


async def test_userinfo_needs_a_bearer_token(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        missing = await http.get("/userinfo")
        basic = await http.get("/userinfo", auth=("cli_x", "secret"))
        in_query = await http.get("/userinfo", params={"access_token": "abc"})
        malformed = await http.get("/userinfo", headers={"authorization": "Bearer a b"})
    # RFC 6750 3.1: no credentials (or another scheme) -> 401 and no error code in the challenge
    for response in (missing, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="issuer"'
    # a token in the URL is refused, never read (RFC 6750 2.3 is optional; it ends up in logs)
    assert in_query.status_code == 400 and in_query.json()["error"] == "invalid_request"
    _refused(malformed, 401, "invalid_token")


async def test_userinfo_refuses_an_expired_token(signin_runtime: Runtime) -> None:
    subject = await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        old = signin_runtime.grants.minter.mint(
            subject=subject,
            client_id=client_id,
            audience=("https://api.example",),
            scope="openid",
            ttl=60,
            now=int(signin_runtime.clock()) - 120,
        )
        fresh = signin_runtime.grants.minter.mint(
            subject=subject, client_id=client_id, audience=("https://api.example",), scope="openid", ttl=60
        )
        expired = await http.get("/userinfo", headers=_bearer(old.token))
        valid = await http.get("/userinfo", headers=_bearer(fresh.token))
    _refused(expired, 401, "invalid_token")
    assert valid.status_code == 200  # the same token, minted now, passes: only exp differs


async def test_userinfo_refuses_a_forged_signature(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        token = (await _tokens(http, client_id))["access_token"]
        head, body, signature = token.split(".")
        other = secrets.token_urlsafe(64)[: len(signature)]
        forged = await http.get("/userinfo", headers=_bearer(f"{head}.{body}.{other}"))
        # an id_token is signed by the same ring but is no access token (typ JWT, not at+jwt)
        id_token = (await _tokens(http, client_id))["id_token"]
        as_id_token = await http.get("/userinfo", headers=_bearer(id_token))
    _refused(forged, 401, "invalid_token")
    _refused(as_id_token, 401, "invalid_token")


async def test_userinfo_refuses_a_revoked_token(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        tokens = await _tokens(http, client_id)
        assert (await http.get("/userinfo", headers=_bearer(tokens["access_token"]))).status_code == 200
        revoked = await http.post("/revoke", data={"token": tokens["access_token"], "client_id": client_id})
        assert revoked.status_code == 200
        after = await http.get("/userinfo", headers=_bearer(tokens["access_token"]))
        # the refresh token's revocation denylists the family's sid: the other access token dies too
        second = await _tokens(http, client_id)
        await http.post("/revoke", data={"token": second["refresh_token"], "client_id": client_id})
        by_sid = await http.get("/userinfo", headers=_bearer(second["access_token"]))
    _refused(after, 401, "invalid_token")
    _refused(by_sid, 401, "invalid_token")


async def test_userinfo_refuses_a_revoked_subject(signin_runtime: Runtime) -> None:
    subject = await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        tokens = await _tokens(http, client_id)
        await signin_runtime.revocation.revoke_subject(subject, reason="test", actor="test")
        response = await http.get("/userinfo", headers=_bearer(tokens["access_token"]))
    _refused(response, 401, "invalid_token")


async def test_userinfo_needs_the_openid_scope(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        tokens = await _tokens(http, client_id, scope="read")
        response = await http.get("/userinfo", headers=_bearer(tokens["access_token"]))
    challenge = _refused(response, 403, "insufficient_scope")
    assert 'scope="openid"' in challenge


async def test_userinfo_refuses_a_client_credentials_token(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        created = await signin_runtime.clients.create(
            name="svc", grant_types=["client_credentials"], scopes=["openid", "read"]
        )
        assert created.client_secret is not None
        answer = await http.post(
            "/token",
            data={"grant_type": "client_credentials", "scope": "openid read"},
            auth=(created.client_id, created.client_secret),
        )
        assert answer.status_code == 200, answer.text
        response = await http.get("/userinfo", headers=_bearer(answer.json()["access_token"]))
    _refused(response, 401, "invalid_token")
    assert "names no user" in response.json()["error_description"]


async def test_userinfo_refuses_a_disabled_or_unknown_user(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        tokens = await _tokens(http, client_id)
        # disabled without revoking the user's tokens: the user store alone must refuse
        await signin_runtime.users.set_disabled("alice", True)
        disabled = await http.get("/userinfo", headers=_bearer(tokens["access_token"]))
        await signin_runtime.users.set_disabled("alice", False)
        enabled = await http.get("/userinfo", headers=_bearer(tokens["access_token"]))
        nobody = signin_runtime.grants.minter.mint(
            subject="usr_nobody", client_id=client_id, audience=("x",), scope="openid", ttl=60
        )
        unknown = await http.get("/userinfo", headers=_bearer(nobody.token))
    _refused(disabled, 401, "invalid_token")
    assert enabled.status_code == 200
    _refused(unknown, 401, "invalid_token")
