"""Rotation under concurrency, against a real server on SQLite and on PostgreSQL.

DESIGN.md: two concurrent requests with the same token can never both succeed outside the grace
window; inside it every winner gets the same successor, so the family never forks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests import support

PASSWORD = support.PASSWORD
CONCURRENCY = 20


@pytest.fixture(params=["sqlite", "postgresql"])
def db_for_server(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def start(
    db_url: str, tmp_path: Path, key_env: dict[str, str], grace: int
) -> tuple[support.ServerProcess, tuple[str, str]]:
    env = support.issuer_env(db_url, tmp_path / "keys", ISSUER_REFRESH_GRACE=str(grace), **key_env)
    auth = support.register_client(env, grants=("password", "refresh_token"))
    support.add_user(env)
    server = support.ServerProcess(env).start(tmp_path / f"server-{grace}.log")
    return server, auth


async def login(client: httpx.AsyncClient, auth: tuple[str, str]) -> str:
    response = await client.post(
        "/token", auth=auth, data={"grant_type": "password", "username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


async def refresh(client: httpx.AsyncClient, auth: tuple[str, str], token: str) -> httpx.Response:
    return await client.post(
        "/token", auth=auth, data={"grant_type": "refresh_token", "refresh_token": token}
    )


async def stampede(client: httpx.AsyncClient, auth: tuple[str, str], token: str) -> list[httpx.Response]:
    return list(await asyncio.gather(*(refresh(client, auth, token) for _ in range(CONCURRENCY))))


async def test_outside_the_grace_window_exactly_one_wins(db_for_server, tmp_path, key_env) -> None:
    server, auth = start(db_for_server, tmp_path, key_env, grace=0)
    try:
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            token = await login(client, auth)
            responses = await stampede(client, auth, token)
            winners = [r for r in responses if r.status_code == 200]
            losers = [r for r in responses if r.status_code != 200]
            # DESIGN: two concurrent presentations outside the window can never both succeed. One
            # consumes the token; the others are reuse and revoke the family, and that revocation
            # may land before the consumer's own post-rotation session check, which then refuses
            # it too: at most one winner, never two, and the family always ends revoked.
            assert len(winners) <= 1, [r.status_code for r in responses]
            assert len(losers) >= CONCURRENCY - 1
            assert {(r.status_code, r.json()["error"]) for r in losers} == {(400, "invalid_grant")}
            # The losers were reuse: the whole family is revoked, the winner's successor included.
            for presented in [token] + [r.json()["refresh_token"] for r in winners]:
                after = await refresh(client, auth, presented)
                assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    finally:
        server.stop()


async def test_inside_the_grace_window_every_winner_gets_the_same_successor(
    db_for_server, tmp_path, key_env
) -> None:
    server, auth = start(db_for_server, tmp_path, key_env, grace=30)
    try:
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            token = await login(client, auth)
            responses = await stampede(client, auth, token)
            assert all(r.status_code == 200 for r in responses), [
                r.text for r in responses if r.status_code != 200
            ]
            successors = {r.json()["refresh_token"] for r in responses}
            assert len(successors) == 1  # no fork
            access_tokens = {r.json()["access_token"] for r in responses}
            assert len(access_tokens) == CONCURRENCY  # each answer is a fresh access token
            (successor,) = successors
            # The family works on ...
            nxt = await refresh(client, auth, successor)
            assert nxt.status_code == 200, nxt.text
            third = nxt.json()["refresh_token"]
            # ... and now the original token is an older token: presenting it revokes the family.
            old = await refresh(client, auth, token)
            assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
            dead = await refresh(client, auth, third)
            assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    finally:
        server.stop()
