"""Whole scenarios over real HTTP, driven by Authlib's OAuth 2 client the way real clients are.

The server is ``issuer serve`` in a subprocess (SQLite by default, PostgreSQL where marked);
access tokens are verified the way a resource server would, with PyJWT's ``PyJWKClient``
against our JWKS URL.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from tests import support
from tests.support import add_user, register_client

PASSWORD = support.PASSWORD


def verify(server: support.ServerProcess, token: str, audience: str) -> dict[str, object]:
    """What a resource server does: fetch the JWKS, pick the key by kid, verify everything."""
    signing_key = jwt.PyJWKClient(server.url + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=server.url,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )


@pytest.fixture
def app_client(server_env: dict[str, str]) -> tuple[str, str]:
    return register_client(server_env, name="web")


def test_client_credentials_issues_an_access_token_only(server, server_env, app_client) -> None:
    client_id, secret = app_client
    with OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        token = oauth.fetch_token(server.url + "/token", grant_type="client_credentials", scope="read")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    assert token["scope"] == "read"
    assert "refresh_token" not in token  # RFC 6749 4.4.3
    header = jwt.get_unverified_header(token["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
    claims = verify(server, token["access_token"], audience=server.url)
    assert claims["sub"] == client_id and claims["client_id"] == client_id
    assert claims["scope"] == "read"
    assert claims["exp"] - claims["iat"] == 300
    assert "sid" not in claims


def test_client_secret_post_works_too(server, app_client) -> None:
    client_id, secret = app_client
    with OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_post") as oauth:
        token = oauth.fetch_token(server.url + "/token", grant_type="client_credentials")
    assert token["scope"] == "read write"


def test_password_then_refresh_then_refresh(server, server_env, app_client) -> None:
    client_id, secret = app_client
    subject = add_user(server_env)
    with OAuth2Client(client_id, secret, scope="read write") as oauth:
        first = oauth.fetch_token(server.url + "/token", username="alice", password=PASSWORD)
        assert first["refresh_token"].startswith("irt_")
        claims = verify(server, first["access_token"], audience=server.url)
        assert claims["sub"] == subject
        sid = claims["sid"]
        second = oauth.refresh_token(server.url + "/token", refresh_token=first["refresh_token"])
        third = oauth.refresh_token(
            server.url + "/token", refresh_token=second["refresh_token"], scope="read"
        )
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    assert verify(server, second["access_token"], audience=server.url)["sid"] == sid
    narrowed = verify(server, third["access_token"], audience=server.url)
    assert narrowed["scope"] == "read" and narrowed["sid"] == sid
    # The spent token is gone: presenting the first one again is reuse, and kills the family.
    with OAuth2Client(client_id, secret) as oauth:
        with pytest.raises(OAuthError) as reused:
            oauth.refresh_token(server.url + "/token", refresh_token=first["refresh_token"])
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as dead:
            oauth.refresh_token(server.url + "/token", refresh_token=third["refresh_token"])
        assert dead.value.error == "invalid_grant"


def test_grace_replay_from_another_address_revokes_the_login(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    """Issue 14: the token just rotated, replayed inside the grace window from another client
    address (here 127.0.0.2, a second loopback address), is a thief's copy: ``invalid_grant``,
    the family is revoked (the owner's successor dies) and its sid denylisted (the owner's
    access token is no longer active). From the owner's address the replay still works. The
    window is the longest allowed, so that a slow machine stays inside it."""
    server_env = support.issuer_env(sqlite_url, tmp_path / "keys", ISSUER_REFRESH_GRACE="300", **key_env)
    with support.running_server(server_env, tmp_path / "server.log") as server:
        _replay_from_another_address(server, server_env)


def _replay_from_another_address(server: support.ServerProcess, server_env: dict[str, str]) -> None:
    client_id, secret = register_client(server_env, name="web")
    add_user(server_env)
    rs_id, rs_secret = register_client(
        server_env, "--can-introspect", name="rs", grants=("client_credentials",)
    )

    def token(address: str, **form: str) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10) as http:
            return http.post(server.url + "/token", data=form, auth=(client_id, secret))

    def active(access_token: str) -> bool:
        answer = support.post(
            server.url + "/introspect", data={"token": access_token}, auth=(rs_id, rs_secret), timeout=10
        )
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["active"])

    login = token("127.0.0.1", grant_type="password", username="alice", password=PASSWORD).json()
    owner = token("127.0.0.1", grant_type="refresh_token", refresh_token=login["refresh_token"])
    assert owner.status_code == 200, owner.text
    again = token("127.0.0.1", grant_type="refresh_token", refresh_token=login["refresh_token"])
    assert again.status_code == 200 and again.json()["refresh_token"] == owner.json()["refresh_token"]
    assert active(owner.json()["access_token"])
    thief = token("127.0.0.2", grant_type="refresh_token", refresh_token=login["refresh_token"])
    assert thief.status_code == 400 and thief.json()["error"] == "invalid_grant"
    assert "refresh_token" not in thief.json() and "access_token" not in thief.json()
    successor = token("127.0.0.1", grant_type="refresh_token", refresh_token=owner.json()["refresh_token"])
    assert successor.status_code == 400 and successor.json()["error"] == "invalid_grant"
    assert not active(owner.json()["access_token"]) and not active(again.json()["access_token"])


def test_scope_may_shrink_but_never_grow(server, server_env, app_client) -> None:
    client_id, secret = app_client
    add_user(server_env)
    with OAuth2Client(client_id, secret) as oauth:
        login = oauth.fetch_token(server.url + "/token", username="alice", password=PASSWORD, scope="read")
        with pytest.raises(OAuthError) as grow:
            oauth.refresh_token(
                server.url + "/token", refresh_token=login["refresh_token"], scope="read write"
            )
        assert grow.value.error == "invalid_scope"
        # The refused request lost nothing: the same token still rotates.
        rotated = oauth.refresh_token(server.url + "/token", refresh_token=login["refresh_token"])
    assert rotated["scope"] == "read"


def test_password_grant_requires_registration(server, server_env) -> None:
    client_id, secret = register_client(server_env, name="svc", grants=("client_credentials",), scope="read")
    add_user(server_env)
    response = support.post(
        server.url + "/token",
        auth=(client_id, secret),
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_password_grant_without_refresh_registration_returns_no_refresh_token(server, server_env) -> None:
    client_id, secret = register_client(server_env, name="cli", grants=("password",), scope="read")
    add_user(server_env)
    response = support.post(
        server.url + "/token",
        auth=(client_id, secret),
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()


def test_a_refresh_token_of_another_client_is_invalid_grant(server, server_env, app_client) -> None:
    client_id, secret = app_client
    other_id, other_secret = register_client(server_env, name="other", grants=("password", "refresh_token"))
    add_user(server_env)
    with OAuth2Client(client_id, secret) as oauth:
        login = oauth.fetch_token(server.url + "/token", username="alice", password=PASSWORD)
    stolen = support.post(
        server.url + "/token",
        auth=(other_id, other_secret),
        data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]},
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    # The owner's token was not consumed by the foreign presentation.
    with OAuth2Client(client_id, secret) as oauth:
        assert oauth.refresh_token(server.url + "/token", refresh_token=login["refresh_token"])[
            "access_token"
        ]


def test_wrong_password_and_unknown_user_look_the_same(server, server_env, app_client) -> None:
    client_id, secret = app_client
    add_user(server_env)
    answers = []
    for username, password in (("alice", "wrong password!"), ("nobody", "wrong password!"), ("", "x")):
        response = support.post(
            server.url + "/token",
            auth=(client_id, secret),
            data={"grant_type": "password", "username": username or " ", "password": password},
        )
        answers.append((response.status_code, response.json(), response.headers["cache-control"]))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][1] == {"error": "invalid_grant", "error_description": "invalid username or password"}


def test_per_client_access_token_ttl_and_audience(server, server_env) -> None:
    client_id, secret = register_client(
        server_env,
        "--access-token-ttl",
        "60",
        "--audience",
        "https://api.example",
        name="api",
        grants=("client_credentials",),
        scope="read",
    )
    with OAuth2Client(client_id, secret) as oauth:
        token = oauth.fetch_token(server.url + "/token", grant_type="client_credentials")
    assert token["expires_in"] == 60
    claims = verify(server, token["access_token"], audience="https://api.example")
    assert claims["exp"] - claims["iat"] == 60


def test_discovery_describes_exactly_what_is_supported(server) -> None:
    document = support.get(server.url + "/.well-known/oauth-authorization-server").json()
    assert document["issuer"] == server.url
    assert document["token_endpoint"] == server.url + "/token"
    assert document["jwks_uri"] == server.url + "/.well-known/jwks.json"
    assert set(document["grant_types_supported"]) == {
        "authorization_code",
        "client_credentials",
        "password",
        "refresh_token",
    }
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",  # public clients (client_id alone)
    }
    assert document["authorization_endpoint"] == server.url + "/authorize"
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["end_session_endpoint"] == server.url + "/logout"
    assert document["userinfo_endpoint"] == server.url + "/userinfo"
    jwks = support.get(document["jwks_uri"]).json()
    assert jwks["keys"] and all(not {"d", "p", "q", "dp", "dq", "qi"} & key.keys() for key in jwks["keys"])


def test_first_start_creates_keys_with_owner_only_permissions(tmp_path: Path, sqlite_url: str) -> None:
    env = support.issuer_env(sqlite_url, tmp_path / "fresh-keys")
    with support.running_server(env, tmp_path / "fresh.log") as proc:
        assert support.get(proc.url + "/.well-known/jwks.json").json()["keys"]
    keys = tmp_path / "fresh-keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert {p.name for p in keys.iterdir()} == {"kek", "hmac"}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in keys.iterdir())
