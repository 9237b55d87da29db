"""Issue 14, point 4: a password change, a disabled user or a disabled client leaves no token alive.

Over HTTP against ``issuer serve`` with the operator's commands (the embedded default: SQLite, no
Redis, so access-token revocations reach the server's copy within a second: polled; the cluster
variant, PostgreSQL and Redis, sees them at once), and at the grant level on both databases for
what HTTP cannot arrange (a disable whose revocation never happened, a stale client cache).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from issuer.errors import InvalidClient, InvalidGrant
from issuer.grants import password, refresh_token
from issuer.grants.base import TokenRequest
from issuer.runtime import Runtime
from issuer.settings import load
from issuer.store.refresh import Outcome
from issuer.store.tables import RefreshFamily
from tests import support
from tests.revocation.support import (
    PASSWORD,
    Client,
    Deployment,
    active,
    introspect_response,
    login,
    refresh,
    revoke,
    until,
)

NEW_PASSWORD = "a brand new passphrase"
FAMILIES = RefreshFamily.__table__  # type: ignore[attr-defined]


def _password_login(url: str, client: Client, password: str, username: str = "alice") -> httpx.Response:
    return support.post(
        url + "/token",
        auth=client.auth,
        data={"grant_type": "password", "username": username, "password": password},
    )


def _dead(url: str, rs: Client, app: Client, tokens: dict[str, Any]) -> bool:
    """The login's refresh token fails and its access token is inactive at /introspect."""
    assert refresh(url, app, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    return until(lambda: not active(url, rs, tokens["access_token"]))


def _next_second(at: float) -> None:
    # A revocation covers tokens issued up to its cut-off (iat <= at + ISSUER_CLOCK_SKEW, in whole
    # seconds): a new login waits for the second after it.
    time.sleep(max(0.0, int(at) + load({}).clock_skew + 1.05 - time.time()))


@pytest.fixture(params=["embedded", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- password change


def test_password_change_revokes_sessions(deployment: Deployment) -> None:
    app = deployment.client("app", "password", "refresh_token")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    subject = deployment.user("alice")
    deployment.user("bob")
    server = deployment.serve("one")
    sessions = [login(server.url, app), login(server.url, app)]
    bobs = login(server.url, app, "bob")
    out = deployment.cli("users", "set-password", "--username", "alice", input=NEW_PASSWORD + "\n").stdout
    changed_at = time.time()
    assert f"password of alice ({subject}) replaced" in out
    assert f"revoked every access token of subject {subject}" in out and "revoked 2 session(s)" in out
    for tokens in sessions:
        assert _dead(server.url, rs, app, tokens)
    assert active(server.url, rs, bobs["access_token"])  # another user is untouched
    assert refresh(server.url, app, bobs["refresh_token"]).status_code == 200
    assert _password_login(server.url, app, PASSWORD).json()["error"] == "invalid_grant"
    _next_second(changed_at)
    fresh = _password_login(server.url, app, NEW_PASSWORD)
    assert fresh.status_code == 200, fresh.text
    assert active(server.url, rs, fresh.json()["access_token"])
    assert refresh(server.url, app, fresh.json()["refresh_token"]).status_code == 200


def test_password_change_keep_sessions(embedded: Deployment) -> None:
    app = embedded.client("app", "password", "refresh_token")
    rs = embedded.client("rs", "client_credentials", introspect=True)
    embedded.user("alice")
    server = embedded.serve("one")
    tokens = login(server.url, app)
    out = embedded.cli(
        "users", "set-password", "--username", "alice", "--keep-sessions", input=NEW_PASSWORD + "\n"
    ).stdout
    assert "sessions kept (--keep-sessions)" in out and "revoked" not in out
    assert refresh(server.url, app, tokens["refresh_token"]).status_code == 200
    assert active(server.url, rs, tokens["access_token"])
    assert _password_login(server.url, app, PASSWORD).json()["error"] == "invalid_grant"


# ---------------------------------------------------------------- disabled user


def test_disabled_user_gets_no_token_and_loses_every_session(deployment: Deployment) -> None:
    app = deployment.client("app", "password", "refresh_token")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    subject = deployment.user("alice")
    server = deployment.serve("one")
    tokens = login(server.url, app)
    out = deployment.cli("users", "disable", "alice").stdout
    disabled_at = time.time()
    assert f"user alice ({subject}) disabled" in out and "revoked 1 session(s)" in out
    assert _dead(server.url, rs, app, tokens)
    assert not introspect_response(server.url, rs, tokens["refresh_token"]).json()["active"]
    # The right password now answers exactly like a wrong one: no user enumeration.
    right, wrong = _password_login(server.url, app, PASSWORD), _password_login(server.url, app, "wrong pw!")
    assert right.status_code == wrong.status_code == 400
    assert (
        right.json()
        == wrong.json()
        == {
            "error": "invalid_grant",
            "error_description": "invalid username or password",
        }
    )
    again = deployment.cli("users", "disable", "alice").stdout
    disabled_at = time.time()  # a repeated disable revokes again: its cut-off is the one to wait out
    assert "was already disabled" in again

    assert f"user alice ({subject}) enabled" in deployment.cli("users", "enable", "alice").stdout
    assert "was not disabled" in deployment.cli("users", "enable", "alice").stdout
    _next_second(disabled_at)
    fresh = login(server.url, app)
    assert active(server.url, rs, fresh["access_token"])
    # Tokens revoked while the user was disabled stay revoked.
    assert refresh(server.url, app, tokens["refresh_token"]).status_code == 400
    assert not active(server.url, rs, tokens["access_token"])


async def _setup(runtime: Runtime, *grants: str) -> Any:
    await runtime.users.create("alice", PASSWORD)
    created = await runtime.clients.create(name="app", grant_types=list(grants), scopes=["read"])
    client = await runtime.clients.get(created.client_id)
    assert client is not None
    return client, created.client_secret


async def _grant_login(runtime: Runtime, client: Any, given: str = PASSWORD) -> Any:
    params = {"username": "alice", "password": given}
    return await password.handle(runtime.grants, TokenRequest(client, params, "192.0.2.1"))


async def _grant_refresh(runtime: Runtime, client: Any, token: str) -> Any:
    params = {"refresh_token": token}
    return await refresh_token.handle(runtime.grants, TokenRequest(client, params, "192.0.2.1"))


async def test_disabled_user_cannot_refresh_even_if_the_revocation_never_happened(runtime: Runtime) -> None:
    """Only ``disabled_at`` is set (as if the disable command died before revoking): the rotation
    itself refuses the family, and introspection calls its refresh token inactive."""
    client, _ = await _setup(runtime, "password", "refresh_token")
    tokens = await _grant_login(runtime, client)
    async with runtime.db.transaction() as conn:
        row = await runtime.users.store.by_username(conn, "alice")
        await runtime.users.store.set_disabled(conn, row.id, int(time.time()), int(time.time()))
    with pytest.raises(InvalidGrant) as refused:
        await _grant_refresh(runtime, client, tokens.refresh_token)
    assert refused.value.detail == f"refresh {Outcome.REVOKED.value}"
    assert (await runtime.revocation.introspect(tokens.refresh_token)) == {"active": False}
    async with runtime.db.transaction() as conn:
        revoked_at = (await conn.execute(select(FAMILIES.c.revoked_at))).scalar_one()
    assert revoked_at is None  # nothing was revoked: the check alone refused it
    # The token was not spent: enabled again, the (unrevoked) login goes on.
    async with runtime.db.transaction() as conn:
        await runtime.users.store.set_disabled(conn, row.id, None, int(time.time()))
    assert (await _grant_refresh(runtime, client, tokens.refresh_token)).refresh_token


async def test_disabled_user_costs_the_same_argon2_work(runtime: Runtime, monkeypatch) -> None:
    """A disabled user's password is checked against the dummy hash, once: the work (and answer) of
    a wrong password, never a shortcut."""
    client, _ = await _setup(runtime, "password")
    _, changed = await runtime.users.set_disabled("alice", True)
    assert changed
    verified: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(str(hash))
            return super().verify(hash, password)

    real = runtime.passwords.hasher
    monkeypatch.setattr(
        runtime.passwords,
        "hasher",
        CountingHasher(
            time_cost=real.time_cost,
            memory_cost=real.memory_cost,
            parallelism=real.parallelism,
            hash_len=real.hash_len,
            salt_len=real.salt_len,
            type=real.type,
        ),
    )
    for given in (PASSWORD, "wrong password"):
        with pytest.raises(InvalidGrant) as refused:
            await _grant_login(runtime, client, given)
        assert refused.value.description == "invalid username or password"
    assert verified == [runtime.passwords._dummy] * 2


async def test_disabled_user_login_racing_the_disable_is_refused(runtime: Runtime) -> None:
    """The user is disabled after the password was checked but before the tokens are issued: the
    confirmation in the family's transaction refuses the login (no family escapes the revocation)."""
    client, _ = await _setup(runtime, "password", "refresh_token")
    real_login = runtime.users.login

    async def login_then_disabled(username: str, given: str) -> Any:
        checked = await real_login(username, given)
        await runtime.users.set_disabled(username, True)  # lands between check and issue
        return checked

    runtime.users.login = login_then_disabled  # type: ignore[method-assign]
    with pytest.raises(InvalidGrant):
        await _grant_login(runtime, client)
    async with runtime.db.transaction() as conn:
        assert (await conn.execute(select(FAMILIES))).all() == []


# ---------------------------------------------------------------- disabled client


def test_disabled_client_fails_authentication_at_every_endpoint(deployment: Deployment) -> None:
    app = deployment.client("app", "password", "refresh_token", "client_credentials")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    probe = deployment.client("probe", "client_credentials", introspect=True)
    deployment.user("alice")
    server = deployment.serve("one")
    tokens = login(server.url, app)
    probe_token = support.post(
        server.url + "/token", auth=probe.auth, data={"grant_type": "client_credentials"}
    ).json()["access_token"]
    out = deployment.cli("clients", "disable", app.client_id).stdout
    assert f"client {app.client_id} disabled" in out and "revoked 1 session(s)" in out
    deployment.cli("clients", "disable", probe.client_id)
    # Its access tokens are inactive and its refresh tokens fail at once (the denylist, the rotation).
    assert until(lambda: not active(server.url, rs, tokens["access_token"]))
    assert until(lambda: not active(server.url, rs, probe_token))
    assert refresh(server.url, app, tokens["refresh_token"]).json()["error"] in (
        "invalid_grant",
        "invalid_client",
    )

    def refused(response: httpx.Response) -> bool:
        return response.status_code == 401 and response.json()["error"] == "invalid_client"

    # Authentication fails everywhere within ISSUER_CLIENT_CACHE_TTL (default 5 s): polled.
    assert until(
        lambda: refused(
            support.post(server.url + "/token", auth=app.auth, data={"grant_type": "client_credentials"})
        )
    )
    assert refused(refresh(server.url, app, tokens["refresh_token"]))
    assert refused(_password_login(server.url, app, PASSWORD))
    assert refused(revoke(server.url, app, tokens["access_token"]))
    assert until(lambda: refused(introspect_response(server.url, probe, tokens["access_token"])))
    assert "was already disabled" in deployment.cli("clients", "disable", app.client_id).stdout

    enabled = deployment.cli("clients", "enable", app.client_id).stdout
    assert f"client {app.client_id} enabled" in enabled
    assert "was not disabled" in deployment.cli("clients", "enable", app.client_id).stdout
    assert until(lambda: _password_login(server.url, app, PASSWORD).status_code != 401)
    # Its old tokens stay revoked.
    assert refresh(server.url, app, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert not active(server.url, rs, tokens["access_token"])


def test_disabled_client_tokens_from_a_stale_cache_are_revoked(embedded: Deployment) -> None:
    """An instance that still has the client cached as enabled (ISSUER_CLIENT_CACHE_TTL) may issue
    it tokens after the disable: the client's cut-off covers the cache's lifetime, so they are
    inactive, and a login started then cannot refresh."""
    embedded.env["ISSUER_CLIENT_CACHE_TTL"] = "120"  # server and CLI agree, as in a deployment
    app = embedded.client("app", "password", "refresh_token", "client_credentials")
    rs = embedded.client("rs", "client_credentials", introspect=True)
    embedded.user("alice")
    server = embedded.serve("one")
    login(server.url, app)  # the server caches the client as enabled
    out = embedded.cli("clients", "disable", app.client_id).stdout
    assert f"client {app.client_id} disabled" in out
    late = login(server.url, app)  # still authenticated from the cache
    issued = support.post(server.url + "/token", auth=app.auth, data={"grant_type": "client_credentials"})
    assert issued.status_code == 200
    assert refresh(server.url, app, late["refresh_token"]).json()["error"] == "invalid_grant"
    for token in (late["access_token"], issued.json()["access_token"]):
        assert until(lambda token=token: not active(server.url, rs, token))
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["client_id"] == app.client_id


async def test_disabled_client_cannot_refresh_even_if_the_revocation_never_happened(
    runtime: Runtime,
) -> None:
    client, secret = await _setup(runtime, "password", "refresh_token")
    tokens = await _grant_login(runtime, client)
    async with runtime.db.transaction() as conn:
        await runtime.clients.store.update(conn, client.client_id, disabled_at=int(time.time()))
    # `client` is the record an instance cached before the disable: the rotation still refuses.
    with pytest.raises(InvalidGrant):
        await _grant_refresh(runtime, client, tokens.refresh_token)
    assert (await runtime.revocation.introspect(tokens.refresh_token)) == {"active": False}
    runtime.clients.invalidate()
    with pytest.raises(InvalidClient):
        await runtime.clients.authenticate(client.client_id, secret, basic=True)
