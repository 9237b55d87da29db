"""The operators' commands of browser sign-in, on real SQLite and PostgreSQL: registering public and
first-party clients with redirect URIs (every refused registration is one line and writes nothing),
changing the URIs, listing them; listing and ending browser sessions, listing and revoking consents."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from pathlib import Path

import pytest

from issuer.runtime import Runtime
from tests import support

CB = "https://app.example/cb"


@pytest.fixture
def env(database_url: str, tmp_path: Path, key_env: dict[str, str]) -> dict[str, str]:
    return support.issuer_env(database_url, tmp_path / "keys", **key_env)


def cli_ok(env: dict[str, str], *args: str, input: str | None = None) -> str:
    result = support.run_cli_here(env, *args, input=input)
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(env: dict[str, str], *args: str) -> str:
    result = support.run_cli_here(env, *args)
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    return lines[0]


def listed(env: dict[str, str]) -> list[dict]:
    return json.loads(cli_ok(env, "clients", "list", "--json"))


def create_spa(env: dict[str, str], *extra: str) -> str:
    out = cli_ok(
        env,
        "clients",
        "create",
        "--name",
        "spa",
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--scope",
        "openid profile read",
        "--redirect-uri",
        CB,
        *extra,
        "--json",
    )
    return str(json.loads(out)["client_id"])


# ---------------------------------------------------------------- clients create


def test_public_first_party_client_has_no_secret_and_lists_its_uris(env) -> None:
    out = cli_ok(
        env,
        "clients",
        "create",
        "--name",
        "spa",
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--scope",
        "openid read",
        "--redirect-uri",
        CB,
        "--redirect-uri",
        "http://127.0.0.1/cb",
        "--redirect-uri",
        "com.example.app:/cb",
        "--post-logout-redirect-uri",
        "https://app.example/bye",
        "--public",
        "--first-party",
        "--json",
    )
    created = json.loads(out)
    assert set(created) == {"client_id"}
    (row,) = listed(env)
    assert row["client_id"] == created["client_id"]
    assert row["redirect_uris"] == [CB, "http://127.0.0.1/cb", "com.example.app:/cb"]
    assert row["post_logout_redirect_uris"] == ["https://app.example/bye"]
    assert row["public"] is True and row["token_endpoint_auth_method"] == "none"
    assert row["first_party"] is True
    text = cli_ok(env, "clients", "list")
    assert created["client_id"] in text and "public" in text and "first-party" in text
    assert f"redirect_uris={CB},http://127.0.0.1/cb,com.example.app:/cb" in text
    assert "post_logout_redirect_uris=https://app.example/bye" in text


def test_public_client_in_text_mode_prints_no_secret_and_no_hint(env) -> None:
    result = support.run_cli_here(
        env,
        "clients",
        "create",
        "--name",
        "app",
        "--grant",
        "authorization_code",
        "--redirect-uri",
        CB,
        "--public",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("client_id:") and "client_secret" not in result.stdout
    assert "secret" not in result.stderr
    (row,) = listed(env)
    error = one_line_error(env, "clients", "rotate-secret", row["client_id"])
    assert "public client" in error


def test_confidential_code_client_is_third_party_and_keeps_its_secret(env) -> None:
    result = support.run_cli_here(
        env,
        "clients",
        "create",
        "--name",
        "web",
        "--grant",
        "authorization_code",
        "--redirect-uri",
        CB,
    )
    assert result.returncode == 0, result.stderr
    assert "client_secret: ics_" in result.stdout and "store it safely" in result.stderr
    (row,) = listed(env)
    assert row["public"] is False and row["token_endpoint_auth_method"] == "client_secret_basic"
    assert row["first_party"] is False and row["redirect_uris"] == [CB]
    assert "confidential" in cli_ok(env, "clients", "list")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            (
                "--public",
                "--grant",
                "authorization_code",
                "--grant",
                "client_credentials",
                "--redirect-uri",
                CB,
            ),
            "client_credentials",
        ),
        (
            ("--public", "--grant", "authorization_code", "--grant", "password", "--redirect-uri", CB),
            "password",
        ),
        (("--public", "--grant", "refresh_token", "--grant", "password"), "password"),
        (("--grant", "authorization_code"), "redirect"),
        (
            ("--grant", "authorization_code", "--redirect-uri", "http://app.example/cb"),
            "http is allowed only",
        ),
        (("--grant", "authorization_code", "--redirect-uri", CB + "#frag"), "fragment"),
        (("--grant", "authorization_code", "--redirect-uri", "/cb"), "absolute"),
        (
            ("--grant", "authorization_code", "--redirect-uri", CB, "--post-logout-redirect-uri", "x/y"),
            "absolute",
        ),
    ],
    ids=[
        "public-client-credentials",
        "public-password",
        "public-password-only",
        "code-without-redirect",
        "http-non-loopback",
        "fragment",
        "relative",
        "relative-post-logout",
    ],
)
def test_refused_registration_is_one_line_and_writes_nothing(env, args, needle) -> None:
    error = one_line_error(env, "clients", "create", "--name", "bad", "--scope", "read", *args, "--json")
    assert needle.lower() in error.lower(), error
    assert listed(env) == []


# ---------------------------------------------------------------- clients update


def test_update_adds_and_removes_redirect_uris(env) -> None:
    client_id = create_spa(env, "--public")
    out = cli_ok(
        env,
        "clients",
        "update",
        client_id,
        "--add-redirect-uri",
        "https://app.example/cb2",
        "--add-post-logout-redirect-uri",
        "https://app.example/bye",
        "--first-party",
    )
    assert (
        f"client {client_id} updated" in out
        and f"redirect_uris:             {CB} https://app.example/cb2" in out
    )
    out = cli_ok(env, "clients", "update", client_id, "--remove-redirect-uri", CB, "--json")
    assert json.loads(out) == {
        "client_id": client_id,
        "redirect_uris": ["https://app.example/cb2"],
        "post_logout_redirect_uris": ["https://app.example/bye"],
        "first_party": True,
        "changed": True,
    }
    cli_ok(
        env,
        "clients",
        "update",
        client_id,
        "--remove-post-logout-redirect-uri",
        "https://app.example/bye",
        "--third-party",
    )
    (row,) = listed(env)
    assert row["redirect_uris"] == ["https://app.example/cb2"]
    assert row["post_logout_redirect_uris"] == [] and row["first_party"] is False


def test_refused_update_is_one_line_and_changes_nothing(env) -> None:
    client_id = create_spa(env)
    before = listed(env)
    for args, needle in [
        (("--remove-redirect-uri", "https://app.example/other"), "https://app.example/other"),
        (("--remove-post-logout-redirect-uri", "https://app.example/bye"), "https://app.example/bye"),
        (("--remove-redirect-uri", CB), "at least one redirect uri"),
        (("--add-redirect-uri", "http://app.example/cb"), "http is allowed only"),
        (("--add-redirect-uri", "https://app.example/x#y", "--first-party"), "fragment"),
        (("--add-post-logout-redirect-uri", "bye"), "absolute"),
    ]:
        error = one_line_error(env, "clients", "update", client_id, *args)
        assert needle in error.lower(), error
    assert listed(env) == before
    assert "no client" in one_line_error(env, "clients", "update", "cli_nope", "--first-party")
    assert support.run_cli_here(env, "clients", "update", client_id).returncode == 2  # nothing to change


async def test_update_applies_at_once_on_this_process(runtime: Runtime) -> None:
    created = await runtime.clients.create(
        name="spa", grant_types=["authorization_code"], scopes=["read"], redirect_uris=[CB], public=True
    )
    assert (await runtime.clients.get(created.client_id)).redirect_uris == (CB,)  # now cached
    done = await runtime.clients.update_redirects(
        created.client_id, add_redirect_uris=["https://app.example/new"], remove_redirect_uris=[CB]
    )
    assert done.changed and done.redirect_uris == ("https://app.example/new",)
    record = await runtime.clients.get(created.client_id)
    assert record.redirect_uris == ("https://app.example/new",)
    with pytest.raises(ValueError, match=re.escape("no redirect URI 'https://gone.example/cb'")):
        await runtime.clients.update_redirects(
            created.client_id, remove_redirect_uris=["https://gone.example/cb"]
        )


# ---------------------------------------------------------------- browser sessions and consents


# The test's runtime runs background tasks on this event loop (the denylist's upkeep): a command
# run on it (it blocks, with its own event loop) would freeze one of them inside its SQLite
# transaction and lock the CLI out; so the commands run in a thread.
def add_user(env: dict[str, str], username: str) -> str:
    result = support.run_cli_here(
        env, "users", "create", "--username", username, input=support.PASSWORD + "\n"
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("subject ")[1].strip()


async def acli(env: dict[str, str], *args: str) -> str:
    return await asyncio.to_thread(cli_ok, env, *args)


async def aerror(env: dict[str, str], *args: str) -> str:
    return await asyncio.to_thread(one_line_error, env, *args)


async def _browser_session(runtime: Runtime, subject: str, now: int) -> str:
    session_id = "bss_" + secrets.token_urlsafe(16)
    async with runtime.db.transaction() as conn:
        await runtime.browser_sessions.create(
            conn,
            digest=secrets.token_bytes(32),
            session_id=session_id,
            subject=subject,
            auth_time=now - 5,
            now=now,
            idle_ttl=3600,
            absolute_ttl=86400,
        )
    return session_id


async def _family(runtime: Runtime, client_id: str, subject: str, session_id: str, now: int) -> str:
    family_id = "sid_" + secrets.token_urlsafe(16)
    async with runtime.db.transaction() as conn:
        await runtime.refresh_store.start_family(
            conn,
            family_id=family_id,
            client_id=client_id,
            subject=subject,
            scope="openid read",
            digest=secrets.token_bytes(32),
            now=now,
            idle_ttl=3600,
            absolute_ttl=86400,
            browser_session_id=session_id,
        )
    return family_id


async def test_browser_sessions_list_and_end(runtime: Runtime, env) -> None:
    subject = await asyncio.to_thread(add_user, env, "alice")
    client_id = await asyncio.to_thread(create_spa, env)
    now = int(time.time())
    first = await _browser_session(runtime, subject, now)
    second = await _browser_session(runtime, subject, now)
    first_family = await _family(runtime, client_id, subject, first, now)
    second_family = await _family(runtime, client_id, subject, second, now)

    rows = json.loads(await acli(env, "sessions", "browser", "--username", "alice", "--json"))
    assert {r["session"] for r in rows} == {first, second}
    row = next(r for r in rows if r["session"] == first)
    assert row["auth_time"] == now - 5 and row["created_at"] == now and row["last_used_at"] == now
    assert row["idle_expires_at"] == now + 3600 and row["expires_at"] == now + 86400
    assert row["state"] == "live" and row["ended_at"] is None

    out = await acli(env, "sessions", "end-browser", first, "--reason", "lost laptop")
    assert f"ended browser session {first}" in out and "revoked 1 session(s)" in out and first_family in out
    async with runtime.db.transaction() as conn:
        ended = await runtime.refresh_store.family(conn, first_family)
        other = await runtime.refresh_store.family(conn, second_family)
        session = await runtime.browser_sessions.by_id(conn, first)
    assert ended is not None and ended.revoked_at is not None
    assert other is not None and other.revoked_at is None  # the other browser stays signed in
    assert session is not None and session.ended_reason == "lost laptop"
    entries, _ = await runtime.denylist.feed(0)
    denied = {(e.kind, e.value) for e in entries}
    assert ("sid", first_family) in denied and ("sid", second_family) not in denied

    live = json.loads(await acli(env, "sessions", "browser", "--subject", subject, "--json"))
    assert [r["session"] for r in live] == [second]
    everything = json.loads(await acli(env, "sessions", "browser", "--subject", subject, "--all", "--json"))
    assert {r["session"]: r["state"] for r in everything} == {first: "ended (lost laptop)", second: "live"}
    text = await acli(env, "sessions", "browser", "--subject", subject, "--all")
    assert f"{first}  subject={subject}" in text and "ended (lost laptop)" in text

    again = await acli(env, "sessions", "end-browser", first)
    assert (
        f"browser session {first} had already ended (lost laptop)" in again
        and "revoked 0 session(s)" in again
    )
    assert "no browser session" in await aerror(env, "sessions", "end-browser", "bss_nope")
    assert "no user" in await aerror(env, "sessions", "browser", "--username", "ghost")
    assert (
        await asyncio.to_thread(support.run_cli_here, env, "sessions", "browser")
    ).returncode == 2  # --subject or --username

    # Logging the user out everywhere ends the remaining browser session and says so.
    out = await acli(env, "sessions", "revoke", "--subject", subject)
    assert "revoked 1 session(s)" in out and "ended 1 browser session(s):" in out and second in out
    assert json.loads(await acli(env, "sessions", "browser", "--subject", subject, "--json")) == []


async def test_consents_list_and_revoke(runtime: Runtime, env) -> None:
    subject = await asyncio.to_thread(add_user, env, "bob")
    spa, other = await asyncio.to_thread(create_spa, env), await asyncio.to_thread(create_spa, env)
    now = int(time.time())
    async with runtime.db.transaction() as conn:
        await runtime.consents.grant(conn, subject, spa, ["openid", "read"], now)
        await runtime.consents.grant(conn, subject, other, ["profile"], now)

    rows = json.loads(await acli(env, "sessions", "consents", "--username", "bob", "--json"))
    assert sorted((r["client_id"], r["scope"], r["granted_at"]) for r in rows) == sorted(
        [(spa, "openid", now), (spa, "read", now), (other, "profile", now)]
    )
    assert f"client={spa}  scope=read" in await acli(env, "sessions", "consents", "--subject", subject)

    out = await acli(env, "sessions", "revoke-consent", "--subject", subject, "--client", spa)
    assert out.strip() == f"revoked 2 consent(s) of subject {subject} to client {spa}"
    async with runtime.db.transaction() as conn:
        assert await runtime.consents.granted(conn, subject, spa) == set()
        assert await runtime.consents.granted(conn, subject, other) == {"profile"}

    done = json.loads(await acli(env, "sessions", "revoke-consent", "--username", "bob", "--json"))
    assert done == {"subject": subject, "client_id": None, "revoked": 1}
    assert json.loads(await acli(env, "sessions", "consents", "--subject", subject, "--json")) == []
