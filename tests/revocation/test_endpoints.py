"""``POST /revoke`` (RFC 7009), ``POST /introspect`` (RFC 7662) and ``GET /revocations`` over HTTP.

One embedded server (SQLite, no Redis) for the module. Clients ``a`` and ``b`` log users in;
``rs`` is a resource server registered with ``--can-introspect``. Each test logs in afresh.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from issuer.keys.material import b64encode
from issuer.runtime import Runtime
from issuer.settings import load
from issuer.store import migrations
from tests import support
from tests.revocation.support import Client, Deployment, active, introspect, login, refresh, revoke

FORM = "application/x-www-form-urlencoded"


@dataclass
class Live:
    url: str
    deployment: Deployment
    a: Client
    b: Client
    rs: Client

    def audit(self) -> list[dict[str, Any]]:
        out = self.deployment.cli("audit", "tail", "--json", "--limit", "1000").stdout
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("revocation-endpoints")
    db = f"sqlite:///{tmp / 'issuer.db'}"
    migrations.upgrade(db)
    keys = {"ISSUER_KEY_ENCRYPTION_KEY": support.test_key(), "ISSUER_HMAC_KEY": support.test_key()}
    deployment = Deployment(support.issuer_env(db, tmp / "keys", **keys), tmp)
    with deployment.stack:
        a = deployment.client("a", "password", "refresh_token", scope="read write")
        b = deployment.client("b", "password", "refresh_token", scope="read write")
        rs = deployment.client("rs", "client_credentials", introspect=True)
        deployment.user("alice")
        server = deployment.serve("server")
        yield Live(server.url, deployment, a, b, rs)


# ---------------------------------------------------------------- edge cases, table-driven


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    status: int
    error: str | None
    body: str = "token=whatever"
    auth: str = "a"  # a | rs | none | wrong
    method: str = "POST"
    content_type: str = FORM


CASES = [
    Case("revoke: missing token", "/revoke", 400, "invalid_request", body="token_type_hint=access_token"),
    Case("revoke: no client authentication", "/revoke", 401, "invalid_client", auth="none"),
    Case("revoke: wrong secret", "/revoke", 401, "invalid_client", auth="wrong"),
    Case("revoke: GET instead of POST", "/revoke", 405, "invalid_request", method="GET", body=""),
    Case("revoke: JSON body", "/revoke", 415, "invalid_request", body="{}", content_type="application/json"),
    Case("revoke: repeated token", "/revoke", 400, "invalid_request", body="token=a&token=b"),
    Case("revoke: unknown token answers 200", "/revoke", 200, None),
    Case("revoke: unknown hint answers 200", "/revoke", 200, None, body="token=x&token_type_hint=id_token"),
    Case("introspect: missing token", "/introspect", 400, "invalid_request", body="", auth="rs"),
    Case("introspect: no client authentication", "/introspect", 401, "invalid_client", auth="none"),
    Case("introspect: wrong secret", "/introspect", 401, "invalid_client", auth="wrong"),
    Case("introspect: client not allowed to introspect", "/introspect", 403, "unauthorized_client", auth="a"),
    Case("introspect: GET instead of POST", "/introspect", 405, "invalid_request", method="GET", auth="rs"),
    Case(
        "introspect: unknown hint is only a hint",
        "/introspect",
        200,
        None,
        body="token=x&token_type_hint=zz",
        auth="rs",
    ),
    Case("feed: no client authentication", "/revocations", 401, "invalid_client", method="GET", auth="none"),
    Case("feed: client not allowed", "/revocations", 403, "unauthorized_client", method="GET", auth="a"),
    Case(
        "feed: cursor that is not ours",
        "/revocations?since=abc",
        400,
        "invalid_request",
        method="GET",
        auth="rs",
    ),
    Case("feed: PUT", "/revocations", 405, "invalid_request", method="PUT", auth="rs"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_edge_cases(live: Live, case: Case) -> None:
    auth: Any = {
        "a": live.a.auth,
        "rs": live.rs.auth,
        "none": None,
        "wrong": (live.a.client_id, "ics_wrong"),
    }[case.auth]
    response = support.request(
        case.method,
        live.url + case.path,
        content=case.body.encode() if case.method in ("POST", "PUT") else None,
        headers={"Content-Type": case.content_type} if case.method in ("POST", "PUT") else {},
        auth=auth,
    )
    assert response.status_code == case.status, response.text
    if case.error is None:
        if case.path == "/introspect":
            assert response.json() == {"active": False}
        else:
            assert response.content == b""
        assert response.headers["cache-control"] == "no-store"
        return
    body = response.json()
    assert body["error"] == case.error
    assert "error_description" in body
    assert response.headers["cache-control"] == "no-store"
    if case.status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")


# ---------------------------------------------------------------- RFC 7009 behaviour


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token", "no_such_hint"])
def test_revoking_a_refresh_token_ends_the_login(live: Live, hint: str | None) -> None:
    tokens = login(live.url, live.a)
    assert active(live.url, live.rs, tokens["access_token"])
    assert revoke(live.url, live.a, tokens["refresh_token"], hint).status_code == 200
    assert refresh(live.url, live.a, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    # the family's sid is denylisted: its live access token dies too
    assert introspect(live.url, live.rs, tokens["access_token"]) == {"active": False}
    assert introspect(live.url, live.rs, tokens["refresh_token"]) == {"active": False}
    assert revoke(live.url, live.a, tokens["refresh_token"], hint).status_code == 200  # again: still 200


def test_revoking_an_access_token_kills_only_that_token(live: Live) -> None:
    tokens = login(live.url, live.a)
    assert revoke(live.url, live.a, tokens["access_token"]).status_code == 200
    assert introspect(live.url, live.rs, tokens["access_token"]) == {"active": False}
    rotated = refresh(live.url, live.a, tokens["refresh_token"])
    assert rotated.status_code == 200  # the login goes on
    assert active(live.url, live.rs, rotated.json()["access_token"])


def test_another_client_can_never_revoke_someone_elses_tokens(live: Live) -> None:
    tokens = login(live.url, live.a)
    for token in (tokens["refresh_token"], tokens["access_token"]):
        for hint in (None, "access_token", "refresh_token"):
            response = revoke(live.url, live.b, token, hint)
            assert response.status_code == 200  # RFC 7009 2.2: nothing to tell the caller
            assert response.content == b""
    assert active(live.url, live.rs, tokens["access_token"])
    assert active(live.url, live.rs, tokens["refresh_token"])
    assert refresh(live.url, live.a, tokens["refresh_token"]).status_code == 200
    refused = [e for e in live.audit() if e["event"] == "revocation.refused_foreign_client"]
    assert refused and refused[-1]["client_id"] == live.b.client_id
    assert refused[-1]["detail"]["owner"] == live.a.client_id


def test_a_resource_server_cannot_revoke_tokens_it_introspects(live: Live) -> None:
    tokens = login(live.url, live.a)
    assert revoke(live.url, live.rs, tokens["access_token"]).status_code == 200
    assert active(live.url, live.rs, tokens["access_token"])


# ---------------------------------------------------------------- RFC 7662 behaviour


def test_active_access_token_fields(live: Live) -> None:
    tokens = login(live.url, live.a)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    body = introspect(live.url, live.rs, tokens["access_token"])
    assert body == {
        "active": True,
        "token_type": "Bearer",
        "scope": "read write",
        "client_id": live.a.client_id,
        "sub": claims["sub"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "iss": live.url,
        "aud": claims["aud"],
        "jti": claims["jti"],
    }
    assert introspect(live.url, live.rs, tokens["access_token"], "refresh_token") == body  # a hint only


def test_active_refresh_token_fields(live: Live) -> None:
    tokens = login(live.url, live.a)
    body = introspect(live.url, live.rs, tokens["refresh_token"])
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert body["client_id"] == live.a.client_id
    assert body["scope"] == "read write"
    assert body["exp"] > body["iat"]
    # used (rotated) refresh tokens are no longer active
    assert refresh(live.url, live.a, tokens["refresh_token"]).status_code == 200
    assert introspect(live.url, live.rs, tokens["refresh_token"]) == {"active": False}


def _mint(live: Live, **overrides: Any) -> str:
    """An access token signed with the server's own key (read from its database) at another time."""

    async def mint() -> str:
        runtime = Runtime(load(dict(live.deployment.env, ISSUER_URL=live.url)))
        try:
            await runtime.keyring.reload()
            minted = runtime.grants.minter.mint(
                subject="usr_x", client_id=live.a.client_id, audience=(live.url,), scope="read", **overrides
            )
            return minted.token
        finally:
            await runtime.close()

    return asyncio.run(mint())


def _server_kid(live: Live) -> str:
    return str(support.get(live.url + "/.well-known/jwks.json").json()["keys"][0]["kid"])


def test_inactive_tokens(live: Live) -> None:
    kid = _server_kid(live)
    now = int(time.time())
    claims = {
        "iss": live.url,
        "sub": "usr_x",
        "aud": live.url,
        "exp": now + 300,
        "iat": now,
        "jti": "forged",
        "client_id": live.a.client_id,
    }
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    fresh = _mint(live, ttl=300)
    assert active(live.url, live.rs, fresh)  # the minting helper makes tokens the server accepts
    inactive = {
        "unknown opaque string": "not-a-token",
        "unknown refresh token": "irt_" + "A" * 43,
        "expired (our signature)": _mint(live, ttl=10, now=now - 1000),
        "foreign key, our kid": jwt.encode(
            claims, foreign_key, "ES256", headers={"kid": kid, "typ": "at+jwt"}
        ),
        "foreign key, unknown kid": jwt.encode(
            claims, foreign_key, "ES256", headers={"kid": "nope", "typ": "at+jwt"}
        ),
        "HS256 with our kid": jwt.encode(
            claims, "secret" * 6, "HS256", headers={"kid": kid, "typ": "at+jwt"}
        ),
        "alg none": jwt.encode(claims, None, "none", headers={"kid": kid, "typ": "at+jwt"}),
        "tampered claims": fresh.split(".")[0]
        + "."
        + _b64(dict(claims, jti="other"))
        + "."
        + fresh.split(".")[2],
    }
    for name, token in inactive.items():
        assert introspect(live.url, live.rs, token) == {"active": False}, name


def _b64(data: dict[str, Any]) -> str:
    return b64encode(json.dumps(data).encode())


def test_reuse_kills_the_familys_access_tokens_and_is_audited(live: Live) -> None:
    tokens = login(live.url, live.a)
    first = refresh(live.url, live.a, tokens["refresh_token"]).json()
    second = refresh(live.url, live.a, first["refresh_token"]).json()
    assert active(live.url, live.rs, second["access_token"])
    # the first refresh token again after its successor was used: reuse (never the grace replay)
    replay = refresh(live.url, live.a, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    for token in (tokens["access_token"], first["access_token"], second["access_token"]):
        assert introspect(live.url, live.rs, token) == {"active": False}
    events = [e["event"] for e in live.audit()]
    assert "refresh_token.reuse_detected" in events
    sid = jwt.decode(second["access_token"], options={"verify_signature": False})["sid"]
    assert any(e["event"] == "revocation.sid" and e["family_id"] == sid for e in live.audit())


# ---------------------------------------------------------------- the feed and discovery


def test_feed(live: Live) -> None:
    tokens = login(live.url, live.a)
    revoke(live.url, live.a, tokens["access_token"])
    jti = jwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    response = support.get(live.url + "/revocations", auth=live.rs.auth)
    assert response.status_code == 200
    body = response.json()
    assert {"kind": "jti", "value": jti} in [
        {"kind": e["kind"], "value": e["value"]} for e in body["entries"]
    ]
    assert isinstance(body["next_cursor"], str)
    assert response.headers["cache-control"] == "private, max-age=1"
    # A matching ETag is 304. The feed holds back entries younger than a few seconds (their
    # cursor may still move), so a 200 in between is legitimate only with a moved cursor.
    etag, cursor = response.headers["etag"], body["next_cursor"]
    for _ in range(3):
        again = support.get(
            live.url + "/revocations?since=0", auth=live.rs.auth, headers={"If-None-Match": etag}
        )
        if again.status_code == 304:
            break
        assert again.status_code == 200 and again.json()["next_cursor"] != cursor, again.text
        etag, cursor = again.headers["etag"], again.json()["next_cursor"]
    assert again.status_code == 304
    # client_secret_post works too; a cursor returns what came after it (recent entries may repeat)
    posted = support.post(
        live.url + "/revocations", data={"since": body["next_cursor"], **_post_auth(live.rs)}
    )
    assert posted.status_code == 200
    later = [e["value"] for e in posted.json()["entries"]]
    assert set(later) <= {e["value"] for e in body["entries"]}


def _post_auth(client: Client) -> dict[str, str]:
    return {"client_id": client.client_id, "client_secret": client.secret}


def test_metadata_names_the_endpoints(live: Live) -> None:
    document = support.get(live.url + "/.well-known/oauth-authorization-server").json()
    assert document["revocation_endpoint"] == live.url + "/revoke"
    assert document["introspection_endpoint"] == live.url + "/introspect"
    # a public client revokes with its client_id alone; introspection always wants a secret
    assert document["revocation_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    introspection = document["introspection_endpoint_auth_methods_supported"]
    assert introspection == ["client_secret_basic", "client_secret_post"]


def test_introspection_works_with_post_authentication(live: Live) -> None:
    tokens = login(live.url, live.a)
    response = support.post(
        live.url + "/introspect", data={"token": tokens["access_token"], **_post_auth(live.rs)}
    )
    assert response.json()["active"] is True
