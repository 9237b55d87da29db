"""The refresh-token store's contract, on SQLite and PostgreSQL (DESIGN.md, refresh tokens).

Time is passed in (``Presentation.now``), so idle and absolute expiry are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from sqlalchemy import select, text

from issuer.errors import InvalidScope
from issuer.runtime import Runtime
from issuer.store.refresh import Outcome, Presentation
from issuer.store.tables import AuditEvent, RefreshToken

NOW = 1_900_000_000
IDLE = 3600
ABSOLUTE = 4 * 3600


async def login(
    runtime: Runtime, scope: str = "read write", client_id: str = "cli_a", now: int = NOW
) -> tuple[str, str]:
    tokens = runtime.grants.refresh_tokens
    token = tokens.new()
    family_id = "sid_" + secrets.token_urlsafe(8)
    async with runtime.db.transaction() as conn:
        await runtime.refresh_store.start_family(
            conn,
            family_id=family_id,
            client_id=client_id,
            subject="usr_1",
            scope=scope,
            digest=tokens.digest(token),
            now=now,
            idle_ttl=IDLE,
            absolute_ttl=ABSOLUTE,
        )
    return family_id, token


def present(
    runtime: Runtime, token: str, *, now: int, client_id: str = "cli_a", grace: int = 10
) -> Presentation:
    tokens = runtime.grants.refresh_tokens
    return Presentation(
        digest=tokens.digest(token),
        successor_digest=tokens.digest(tokens.successor_of(token)),
        client_id=client_id,
        address="192.0.2.1",
        now=now,
        idle_ttl=IDLE,
        grace=grace,
    )


def keep(scope: str) -> str:
    return scope


async def rotate(runtime: Runtime, token: str, *, now: int, **kwargs: object):
    return await runtime.refresh_store.rotate(runtime.db, present(runtime, token, now=now, **kwargs), keep)  # type: ignore[arg-type]


async def test_only_digests_are_stored(runtime: Runtime) -> None:
    _, token = await login(runtime)
    async with runtime.db.transaction() as conn:
        rows = (await conn.execute(select(RefreshToken.__table__))).all()  # type: ignore[attr-defined]
        dump = " ".join(str(value) for row in rows for value in row)
    assert token not in dump and token[4:] not in dump
    assert [bytes(row.digest) for row in rows] == [runtime.grants.refresh_tokens.digest(token)]


async def test_rotation_spends_the_token_and_issues_the_derived_successor(runtime: Runtime) -> None:
    family, token = await login(runtime)
    result = await rotate(runtime, token, now=NOW + 5)
    assert result.outcome is Outcome.ROTATED and result.family_id == family and result.scope == "read write"
    successor = runtime.grants.refresh_tokens.successor_of(token)
    assert (await rotate(runtime, successor, now=NOW + 6)).outcome is Outcome.ROTATED


async def test_replay_inside_grace_returns_the_same_successor_and_writes_nothing(runtime: Runtime) -> None:
    family, token = await login(runtime)
    await rotate(runtime, token, now=NOW)
    replay = await rotate(runtime, token, now=NOW + 10)  # exactly at the edge of a 10 s window
    assert replay.outcome is Outcome.REPLAYED and replay.family_id == family
    successor = runtime.grants.refresh_tokens.successor_of(token)
    assert (await rotate(runtime, successor, now=NOW + 11)).outcome is Outcome.ROTATED


async def test_replay_after_the_grace_window_is_reuse_and_revokes_the_family(runtime: Runtime) -> None:
    family, token = await login(runtime)
    await rotate(runtime, token, now=NOW)
    reuse = await rotate(runtime, token, now=NOW + 11)
    assert reuse.outcome is Outcome.REUSED and reuse.family_id == family
    successor = runtime.grants.refresh_tokens.successor_of(token)
    assert (await rotate(runtime, successor, now=NOW + 12)).outcome is Outcome.REVOKED
    async with runtime.db.transaction() as conn:
        events = (
            await conn.execute(
                select(AuditEvent.__table__).where(text("event = 'refresh_token.reuse_detected'"))
            )  # type: ignore[attr-defined]
        ).all()
    assert len(events) == 1 and events[0].family_id == family
    assert f'"first_presented_at":{NOW}' in events[0].detail and f'"reused_at":{NOW + 11}' in events[0].detail


async def test_grace_zero_makes_every_replay_reuse(runtime: Runtime) -> None:
    _, token = await login(runtime)
    await rotate(runtime, token, now=NOW, grace=0)
    assert (await rotate(runtime, token, now=NOW, grace=0)).outcome is Outcome.REUSED


async def test_predecessor_after_its_successor_was_used_is_reuse(runtime: Runtime) -> None:
    _, token = await login(runtime)
    await rotate(runtime, token, now=NOW)
    await rotate(runtime, runtime.grants.refresh_tokens.successor_of(token), now=NOW + 1)
    assert (
        await rotate(runtime, token, now=NOW + 2)
    ).outcome is Outcome.REUSED  # inside grace, but not immediate


async def test_an_older_token_is_reuse(runtime: Runtime) -> None:
    _, first = await login(runtime)
    tokens = runtime.grants.refresh_tokens
    second = tokens.successor_of(first)
    await rotate(runtime, first, now=NOW)
    await rotate(runtime, second, now=NOW + 100)
    assert (await rotate(runtime, first, now=NOW + 200)).outcome is Outcome.REUSED


async def test_another_clients_presentation_is_foreign_and_consumes_nothing(runtime: Runtime) -> None:
    _, token = await login(runtime)
    assert (await rotate(runtime, token, now=NOW, client_id="cli_b")).outcome is Outcome.FOREIGN
    assert (await rotate(runtime, token, now=NOW + 1)).outcome is Outcome.ROTATED


async def test_idle_expiry(runtime: Runtime) -> None:
    _, token = await login(runtime)
    assert (await rotate(runtime, token, now=NOW + IDLE)).outcome is Outcome.EXPIRED
    _, fresh = await login(runtime)
    assert (await rotate(runtime, fresh, now=NOW + IDLE - 1)).outcome is Outcome.ROTATED


async def test_each_rotation_starts_a_new_idle_period_but_never_passes_the_family(runtime: Runtime) -> None:
    tokens = runtime.grants.refresh_tokens
    _, token = await login(runtime)
    now = NOW
    # Rotating every 50 minutes keeps the chain alive past one idle period ...
    for _ in range(4):
        now += IDLE - 600
        assert (await rotate(runtime, token, now=now)).outcome is Outcome.ROTATED
        token = tokens.successor_of(token)
    async with runtime.db.transaction() as conn:
        row = (
            await conn.execute(
                select(RefreshToken.__table__).where(RefreshToken.__table__.c.digest == tokens.digest(token))
            )  # type: ignore[attr-defined]
        ).one()
    assert row.expires_at == NOW + ABSOLUTE  # capped at the family's absolute expiry
    # ... but not past the family's absolute lifetime.
    assert (await rotate(runtime, token, now=NOW + ABSOLUTE)).outcome is Outcome.EXPIRED


async def test_a_revoked_family_refuses_rotation(runtime: Runtime) -> None:
    family, token = await login(runtime)
    async with runtime.db.transaction() as conn:
        assert await runtime.refresh_store.revoke_family(conn, family, NOW, "test")
    assert (await rotate(runtime, token, now=NOW + 1)).outcome is Outcome.REVOKED
    assert (await rotate(runtime, token, now=NOW + 2)).outcome is Outcome.REVOKED  # and it stays unspent


async def test_unknown_token(runtime: Runtime) -> None:
    assert (await rotate(runtime, runtime.grants.refresh_tokens.new(), now=NOW)).outcome is Outcome.UNKNOWN


async def test_an_error_while_narrowing_rolls_the_rotation_back(runtime: Runtime) -> None:
    _, token = await login(runtime)

    def refuse(scope: str) -> str:
        raise InvalidScope()

    with pytest.raises(InvalidScope):
        await runtime.refresh_store.rotate(runtime.db, present(runtime, token, now=NOW), refuse)
    assert (await rotate(runtime, token, now=NOW + 1)).outcome is Outcome.ROTATED  # not spent by the failure


async def test_concurrent_rotations_have_one_winner(runtime: Runtime) -> None:
    _, token = await login(runtime)
    results = await asyncio.gather(*(rotate(runtime, token, now=NOW, grace=0) for _ in range(10)))
    outcomes = sorted(result.outcome.value for result in results)
    assert outcomes.count("rotated") == 1, outcomes
    assert set(outcomes) <= {"rotated", "reused", "revoked"}
