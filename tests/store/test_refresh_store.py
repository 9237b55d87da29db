"""The refresh-token store's contract, on SQLite and PostgreSQL (DESIGN.md, refresh tokens).

Time is passed in (``Presentation.now``), so idle and absolute expiry are tested without sleeping.
Every test runs with both kinds of ``narrow``: a :class:`Narrowing` (what the grant passes: on
PostgreSQL the one-statement rotation of :func:`issuer.store.refresh_pg.rotate`) and a plain
callable (the transactional path).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select, text

from issuer.errors import InvalidScope
from issuer.runtime import Runtime
from issuer.store.refresh import Narrowing, Outcome, Presentation
from issuer.store.tables import AuditEvent, DenylistEntry, RefreshFamily, RefreshToken

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
    runtime: Runtime,
    token: str,
    *,
    now: int,
    client_id: str = "cli_a",
    grace: int = 10,
    address: str | None = "192.0.2.1",
) -> Presentation:
    tokens = runtime.grants.refresh_tokens
    return Presentation(
        digest=tokens.digest(token),
        successor_digest=tokens.digest(tokens.successor_of(token)),
        client_id=client_id,
        address=address,
        now=now,
        idle_ttl=IDLE,
        grace=grace,
    )


def keep(scope: str) -> str:
    return scope


CLIENT_SCOPES = frozenset({"read", "write", "admin"})
NARROW: dict[str, Callable[[str], str]] = {"keep": keep}


@pytest.fixture(autouse=True, params=["narrowing", "callable"])
def narrow_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    NARROW["keep"] = Narrowing(None, CLIENT_SCOPES) if request.param == "narrowing" else keep
    yield request.param
    NARROW["keep"] = keep


async def rotate(runtime: Runtime, token: str, *, now: int, **kwargs: object):
    presentation = present(runtime, token, now=now, **kwargs)  # type: ignore[arg-type]
    return await runtime.refresh_store.rotate(runtime.db, presentation, NARROW["keep"])


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


async def contents(runtime: Runtime) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the tables a presentation could write: the refresh tables, audit, denylist."""
    found: dict[str, list[tuple[object, ...]]] = {}
    async with runtime.db.transaction() as conn:
        for model in (RefreshFamily, RefreshToken, AuditEvent, DenylistEntry):
            table = model.__table__  # type: ignore[attr-defined]
            rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
            found[table.name] = [tuple(row) for row in rows]
    return found


async def test_replay_inside_grace_returns_the_same_successor_and_writes_nothing(runtime: Runtime) -> None:
    family, token = await login(runtime)
    await rotate(runtime, token, now=NOW)
    before = await contents(runtime)
    assert len(before["refresh_tokens"]) == 2  # the spent token and its successor
    replay = await rotate(runtime, token, now=NOW + 10)  # exactly at the edge of a 10 s window
    assert replay.outcome is Outcome.REPLAYED and replay.family_id == family
    assert await contents(runtime) == before  # no row added, changed or removed
    successor = runtime.grants.refresh_tokens.successor_of(token)
    assert (await rotate(runtime, successor, now=NOW + 11)).outcome is Outcome.ROTATED


async def test_grace_replay_from_same_address_returns_same_successor(runtime: Runtime) -> None:
    """The lost response retried, or a second tab: same client address, same successor; the
    address compares in the stored form (one address, two spellings)."""
    family, token = await login(runtime)
    await rotate(runtime, token, now=NOW, address="2001:db8::7")
    replay = await rotate(runtime, token, now=NOW + 3, address="2001:DB8:0:0::7")
    assert replay.outcome is Outcome.REPLAYED and replay.family_id == family and replay.scope == "read write"
    again = await rotate(runtime, token, now=NOW + 4, address="2001:db8::7")  # replays are not counted
    assert again.outcome is Outcome.REPLAYED
    successor = runtime.grants.refresh_tokens.successor_of(token)
    assert (await rotate(runtime, successor, now=NOW + 5, address="2001:db8::7")).outcome is Outcome.ROTATED


async def test_grace_replay_from_another_address_is_reuse(runtime: Runtime) -> None:
    """Issue 14: inside the window, the same token from another address is a second party: the
    family is revoked (the grant then denylists its sid) and the audit names both addresses."""
    family, token = await login(runtime)
    await rotate(runtime, token, now=NOW, address="192.0.2.1")
    reuse = await rotate(runtime, token, now=NOW + 1, address="198.51.100.9")
    assert reuse.outcome is Outcome.REUSED and reuse.family_id == family
    successor = runtime.grants.refresh_tokens.successor_of(token)
    # the owner's successor dies with the family, and the owner's replay gets nothing either
    assert (await rotate(runtime, successor, now=NOW + 2, address="192.0.2.1")).outcome is Outcome.REVOKED
    assert (await rotate(runtime, token, now=NOW + 2, address="192.0.2.1")).outcome is Outcome.REVOKED
    async with runtime.db.transaction() as conn:
        events = (
            await conn.execute(
                select(AuditEvent.__table__).where(text("event = 'refresh_token.reuse_detected'"))
            )  # type: ignore[attr-defined]
        ).all()
    assert len(events) == 1 and events[0].family_id == family
    detail = events[0].detail
    assert '"first_presented_from":"192.0.2.1"' in detail and '"reused_from":"198.51.100.9"' in detail
    assert '"replayed_from_another_address":true' in detail


async def test_grace_replay_with_an_unknown_address_is_honoured(runtime: Runtime) -> None:
    """No address on either side (a transport without one): nothing to compare, so the replay
    rule is the time window alone, as before."""
    _, first = await login(runtime)
    await rotate(runtime, first, now=NOW, address=None)
    assert (await rotate(runtime, first, now=NOW + 1, address="192.0.2.1")).outcome is Outcome.REPLAYED
    second = runtime.grants.refresh_tokens.successor_of(first)
    await rotate(runtime, second, now=NOW + 2, address="192.0.2.1")
    assert (await rotate(runtime, second, now=NOW + 3, address=None)).outcome is Outcome.REPLAYED


def test_replay_addresses_compare_in_the_stored_form() -> None:
    from issuer.store.bounded import stored_address
    from issuer.store.refresh import same_address

    assert stored_address("2001:DB8:0::1") == "2001:db8::1" and stored_address(None) is None
    assert same_address("2001:db8::1", "2001:DB8:0::1") and not same_address("192.0.2.1", "192.0.2.2")
    assert same_address(None, "192.0.2.2") and same_address("192.0.2.1", None)


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


@pytest.mark.parametrize(
    ("stored", "requested", "ceiling"),
    [
        ("read write", None, CLIENT_SCOPES),
        ("read write", "read", CLIENT_SCOPES),
        ("write read", None, CLIENT_SCOPES),  # stored unsorted: the successor is sorted
        ("read write admin", None, frozenset({"write", "read"})),  # the client lost a scope
        ("Zeta alpha _b a-1", None, frozenset({"Zeta", "alpha", "_b", "a-1"})),  # code-point order
        ("read write", "write read", frozenset({"read", "write"})),
        ("", None, CLIENT_SCOPES),
        ("read", None, frozenset()),
    ],
)
async def test_narrowing_in_the_statement_is_the_grants_narrowing(
    runtime: Runtime, stored: str, requested: str | None, ceiling: frozenset[str]
) -> None:
    _, token = await login(runtime, scope=stored)
    narrow = Narrowing(requested, ceiling)
    expected = narrow(stored)
    result = await runtime.refresh_store.rotate(runtime.db, present(runtime, token, now=NOW), narrow)
    assert result.outcome is Outcome.ROTATED and result.scope == expected
    async with runtime.db.transaction() as conn:
        digest = runtime.grants.refresh_tokens.digest(runtime.grants.refresh_tokens.successor_of(token))
        stored_successor = (
            await conn.execute(
                select(RefreshToken.__table__.c.scope).where(RefreshToken.__table__.c.digest == digest)
            )  # type: ignore[attr-defined]
        ).scalar_one()
    assert stored_successor == expected


@pytest.mark.parametrize(
    ("requested", "ceiling"),
    [
        ("read admin", CLIENT_SCOPES),
        ("read", frozenset({"write"})),
        ("read  write", CLIENT_SCOPES),
        ("", CLIENT_SCOPES),
    ],
)
async def test_a_scope_beyond_the_ceiling_or_malformed_is_invalid_and_spends_nothing(
    runtime: Runtime, requested: str, ceiling: frozenset[str]
) -> None:
    _, token = await login(runtime, scope="read write")
    with pytest.raises(InvalidScope):
        await runtime.refresh_store.rotate(
            runtime.db, present(runtime, token, now=NOW), Narrowing(requested, ceiling)
        )
    assert (await rotate(runtime, token, now=NOW + 1)).outcome is Outcome.ROTATED  # not spent


async def test_a_malformed_scope_with_an_unknown_token_is_still_an_unknown_token(runtime: Runtime) -> None:
    unknown = present(runtime, runtime.grants.refresh_tokens.new(), now=NOW)
    result = await runtime.refresh_store.rotate(runtime.db, unknown, Narrowing("read  write", CLIENT_SCOPES))
    assert result.outcome is Outcome.UNKNOWN


async def test_a_family_that_is_not_live_spends_nothing(runtime: Runtime) -> None:
    family, token = await login(runtime)
    async with runtime.db.transaction() as conn:
        await runtime.refresh_store.revoke_family(conn, family, NOW, "test")
    assert (await rotate(runtime, token, now=NOW)).outcome is Outcome.REVOKED
    async with runtime.db.transaction() as conn:
        used = (
            await conn.execute(
                select(RefreshToken.__table__.c.used_at).where(  # type: ignore[attr-defined]
                    RefreshToken.__table__.c.digest == runtime.grants.refresh_tokens.digest(token)  # type: ignore[attr-defined]
                )
            )
        ).scalar_one()
    assert used is None
