"""The code exchange at /token (RFC 6749 4.1.3, RFC 7636 4.5), on both databases.

Codes come from the real authorization endpoint: /authorize, the login page, the 303 with the
code; then the client posts it to /token as Authlib or openid-client would. On PostgreSQL every
test runs twice: as the issuer runs (a code whose bindings hold is exchanged by one statement,
:mod:`issuer.store.signin_pg`; anything else falls back to the transactional path) and with that
statement made to write nothing, so that the transactional path alone decides everything.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import jwt
import pytest

from issuer.runtime import Runtime
from issuer.signin.pkce import s256
from issuer.store import signin_pg
from tests import support
from tests.signin.browser import (
    PASSWORD,
    REDIRECT,
    Browser,
    app_client,
    location_params,
    new_client,
    sign_in,
)


async def _writes_nothing(*_: object, **__: object) -> None:
    return None


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-transactional"])
def database_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both databases and, on PostgreSQL, both paths (see the module doc)."""
    if request.param == "postgresql-transactional":
        monkeypatch.setattr(signin_pg, "exchange", _writes_nothing)
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


async def _code(
    browser: Browser, client_id: str, *, scope: str = "openid read", nonce: str | None = "n-1"
) -> tuple[str, str]:
    """A fresh code and its verifier, through /authorize and the login page."""
    verifier = secrets.token_urlsafe(48)
    answer = await sign_in(browser, client_id, code_challenge=s256(verifier), scope=scope, nonce=nonce)
    return location_params(answer)["code"], verifier


async def _exchange(
    http: httpx.AsyncClient,
    client_id: str,
    code: str,
    verifier: str,
    *,
    secret: str | None = None,
    redirect_uri: str | None = REDIRECT,
) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    if redirect_uri is not None:
        form["redirect_uri"] = redirect_uri
    if secret is None:
        form["client_id"] = client_id
        return await http.post("/token", data=form)
    return await http.post("/token", data=form, auth=(client_id, secret))


async def _introspects_active(runtime: Runtime, token: str) -> bool:
    return bool((await runtime.revocation.introspect(token))["active"])


async def _sessions_of(runtime: Runtime, username: str) -> list[Any]:
    """The browser sessions of ``username`` (signed in through the login page)."""
    async with runtime.db.transaction() as conn:
        row = await runtime.users.store.by_username(conn, username)
        assert row is not None
        return list(await runtime.browser_sessions.sessions(conn, row.id))


def _error(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert "access_token" not in response.json()
    return str(response.json()["error"])


async def test_public_client_sends_only_client_id(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        answer = await _exchange(http, client_id, code, verifier)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "openid read"
    assert body["refresh_token"].startswith("irt_") and body["id_token"]
    assert answer.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client_id and claims["sid"].startswith("sid_")
    # The family remembers the browser session it was started in.
    async with signin_runtime.db.transaction() as conn:
        family = await signin_runtime.refresh_store.family(conn, claims["sid"])
    assert family is not None and family.browser_session_id is not None


async def test_id_token_claims(signin_runtime: Runtime) -> None:
    subject = await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id, nonce="nonce-42")
        body = (await _exchange(http, client_id, code, verifier)).json()
        jwks = (await http.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(body["id_token"])
    assert header["typ"] == "JWT"
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(
        body["id_token"],
        key,
        algorithms=[header["alg"]],
        audience=client_id,
        issuer=signin_runtime.settings.url,
    )
    assert claims["sub"] == subject and claims["azp"] == client_id and claims["nonce"] == "nonce-42"
    assert claims["sid"].startswith("bs_") and claims["auth_time"] <= claims["iat"] < claims["exp"]
    async with signin_runtime.db.transaction() as conn:
        session = await signin_runtime.browser_sessions.by_id(conn, claims["sid"])
    assert session is not None and session.subject == subject


async def test_no_id_token_without_openid(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id, scope="read", nonce=None)
        body = (await _exchange(http, client_id, code, verifier)).json()
    assert "id_token" not in body and body["scope"] == "read"


async def test_confidential_client_with_its_secret(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    created = await signin_runtime.clients.create(
        name="web",
        grant_types=["authorization_code"],
        scopes=["openid", "read"],
        redirect_uris=[REDIRECT],
        first_party=True,
    )
    assert created.client_secret is not None
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), created.client_id)
        answer = await _exchange(http, created.client_id, code, verifier, secret=created.client_secret)
    assert answer.status_code == 200, answer.text
    assert "refresh_token" not in answer.json()  # not registered for refresh_token
    claims = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
    assert claims["sid"].startswith("sid_")


async def test_confidential_client_without_secret_is_invalid_client(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    created = await signin_runtime.clients.create(
        name="web", grant_types=["authorization_code"], scopes=["openid", "read"], redirect_uris=[REDIRECT]
    )
    async with app_client(signin_runtime) as http:
        answer = await _exchange(http, created.client_id, "ica_" + "a" * 43, "v" * 43)
    assert _error(answer, 401) == "invalid_client"


async def test_public_client_presenting_a_secret_is_invalid_client(signin_runtime: Runtime) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        answer = await _exchange(http, client_id, "ica_" + "a" * 43, "v" * 43, secret="ics_guess")
    assert _error(answer, 401) == "invalid_client"


async def test_pkce_wrong_verifier_is_invalid_grant(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        wrong = await _exchange(http, client_id, code, secrets.token_urlsafe(48))
        assert _error(wrong) == "invalid_grant"
        # A code tried with a wrong verifier is spent: the right one no longer helps the thief
        # or anyone else.
        assert _error(await _exchange(http, client_id, code, verifier)) == "invalid_grant"


async def test_pkce_verifier_syntax_is_invalid_request_and_keeps_the_code(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        for bad in ("short", "x" * 129, verifier[:42] + "!"):
            assert _error(await _exchange(http, client_id, code, bad)) == "invalid_request"
        missing = await http.post(
            "/token", data={"grant_type": "authorization_code", "code": code, "client_id": client_id}
        )
        assert _error(missing) == "invalid_request"
        assert (await _exchange(http, client_id, code, verifier)).status_code == 200


async def test_code_replay_revokes_the_family(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        first = (await _exchange(http, client_id, code, verifier)).json()
        assert await _introspects_active(signin_runtime, first["access_token"])
        assert _error(await _exchange(http, client_id, code, verifier)) == "invalid_grant"
        refresh = await http.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": first["refresh_token"],
                "client_id": client_id,
            },
        )
        assert _error(refresh) == "invalid_grant"
    assert not await _introspects_active(signin_runtime, first["access_token"])
    sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    async with signin_runtime.db.transaction() as conn:
        family = await signin_runtime.refresh_store.family(conn, sid)
    assert family is not None and family.revoked_reason == "authorization code replay"


async def test_code_replay_without_refresh_grant_denylists_the_sid(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, grant_types=["authorization_code"])
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        first = (await _exchange(http, client_id, code, verifier)).json()
        assert "refresh_token" not in first
        assert await _introspects_active(signin_runtime, first["access_token"])
        assert _error(await _exchange(http, client_id, code, verifier)) == "invalid_grant"
    assert not await _introspects_active(signin_runtime, first["access_token"])


async def test_code_expiry(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        ttl = signin_runtime.settings.authorization_code_ttl
        real = signin_runtime.grants.clock
        signin_runtime.grants.clock = lambda: real() + ttl + 1
        try:
            answer = await _exchange(http, client_id, code, verifier)
        finally:
            signin_runtime.grants.clock = real
        assert _error(answer) == "invalid_grant"
        assert "expired" in answer.json()["error_description"]


async def test_code_of_another_client(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    victim = await new_client(signin_runtime)
    thief = await new_client(signin_runtime, name="Other")
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), victim)
        answer = await _exchange(http, thief, code, verifier)
    assert _error(answer) == "invalid_grant"
    assert "another client" in answer.json()["error_description"]


async def test_redirect_uri_mismatch_at_token(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime, redirect_uris=[REDIRECT, "https://app.example/other"])
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        other = await _exchange(http, client_id, code, verifier, redirect_uri="https://app.example/other")
        assert _error(other) == "invalid_grant"
        code, verifier = await _code(Browser(http), client_id)
        # Two URIs registered: the exchange must name the one the request used.
        assert _error(await _exchange(http, client_id, code, verifier, redirect_uri=None)) == "invalid_grant"


async def test_redirect_uri_may_be_left_out_with_exactly_one_registered(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        answer = await _exchange(http, client_id, code, verifier, redirect_uri=None)
    assert answer.status_code == 200, answer.text


async def test_ended_browser_session_refuses_the_exchange(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        sessions = await _sessions_of(signin_runtime, "alice")
        await signin_runtime.revocation.end_browser_session(sessions[0].id, reason="logout", actor="test")
        answer = await _exchange(http, client_id, code, verifier)
    assert _error(answer) == "invalid_grant"


@pytest.mark.parametrize("database_url", ["postgresql", "postgresql-transactional"], indirect=True)
async def test_an_exchange_during_a_logout_of_its_session_waits_for_it_and_is_refused(
    signin_runtime: Runtime,
) -> None:
    """A logout has ended the browser session but not committed yet (it reads the session's
    families next): the exchange, on either path, waits for the session's row lock and is
    refused once the logout commits, and no login is left in the logged-out session. Read
    without the lock, the exchange would start a family the logout had already looked past."""
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        [session] = await _sessions_of(signin_runtime, "alice")
        async with signin_runtime.db.transaction() as logout:
            now = int(signin_runtime.clock())
            assert await signin_runtime.browser_sessions.end(logout, session.id, now, "logout")
            exchanging = asyncio.create_task(_exchange(http, client_id, code, verifier))
            await support.until_waiting_for_a_lock(signin_runtime.db, 1)
        answer = await exchanging
    assert _error(answer) == "invalid_grant"
    async with signin_runtime.db.transaction() as conn:
        live = await signin_runtime.refresh_store.families(conn, browser_session_id=session.id, live_at=now)
    assert live == []


async def test_disabled_user_refuses_the_exchange(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        await signin_runtime.users.set_disabled("alice", True)
        answer = await _exchange(http, client_id, code, verifier)
    assert _error(answer) == "invalid_grant"


async def test_client_without_the_grant_is_unauthorized_client(signin_runtime: Runtime) -> None:
    created = await signin_runtime.clients.create(
        name="m2m", grant_types=["client_credentials"], scopes=["read"]
    )
    assert created.client_secret is not None
    async with app_client(signin_runtime) as http:
        answer = await _exchange(
            http, created.client_id, "ica_" + "a" * 43, "v" * 43, secret=created.client_secret
        )
    assert _error(answer) == "unauthorized_client"


@pytest.mark.parametrize("presented", ["not-a-code", "ica_" + "b" * 43])
async def test_unknown_code_is_invalid_grant(signin_runtime: Runtime, presented: str) -> None:
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        assert _error(await _exchange(http, client_id, presented, "v" * 43)) == "invalid_grant"


async def test_racing_exchanges_one_wins(signin_runtime: Runtime) -> None:
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        answers = await asyncio.gather(*(_exchange(http, client_id, code, verifier) for _ in range(20)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) == 1, statuses
    assert all(answer.json()["error"] == "invalid_grant" for answer in answers if answer.status_code != 200)
    # Every loser was a replay: the winner's login is revoked too (RFC 6749 4.1.2).
    winner = next(answer for answer in answers if answer.status_code == 200).json()
    assert not await _introspects_active(signin_runtime, winner["access_token"])


async def test_on_postgresql_a_code_whose_bindings_hold_is_one_statement(
    signin_runtime: Runtime, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which path decided: the transactional path spends through ``CodeStore.spend``; the one
    statement does not. A refusal and a replay always go through the transactional path."""
    spends: list[bytes] = []
    spend = signin_runtime.codes.spend

    async def counted(conn: object, digest: bytes, now: int, family_id: str | None = None) -> object:
        spends.append(digest)
        return await spend(conn, digest, now, family_id)  # type: ignore[arg-type]

    monkeypatch.setattr(signin_runtime.codes, "spend", counted)
    one_statement = request.node.callspec.params["database_url"] == "postgresql"
    await signin_runtime.users.create("alice", PASSWORD)
    client_id = await new_client(signin_runtime)
    async with app_client(signin_runtime) as http:
        code, verifier = await _code(Browser(http), client_id)
        assert (await _exchange(http, client_id, code, verifier)).status_code == 200
        assert len(spends) == (0 if one_statement else 1)
        assert _error(await _exchange(http, client_id, code, verifier)) == "invalid_grant"  # replay
        code, _ = await _code(Browser(http), client_id)
        assert _error(await _exchange(http, client_id, code, secrets.token_urlsafe(48))) == "invalid_grant"
    assert len(spends) == (2 if one_statement else 3)
