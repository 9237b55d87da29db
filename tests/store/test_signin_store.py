"""Browser sign-in records on SQLite and PostgreSQL: sessions, one-time codes, consents.

DESIGN.md, "Browser sign-in": sessions keep only the cookie's digest and end with a reason; codes
are single use, decided by one conditional update, and a replay is told apart from an unknown or
expired code; consents are remembered per user, client and scope. On PostgreSQL a code whose
bindings all hold is exchanged by one statement (``CodeStore.exchange``): it commits all of the
exchange or, when any binding fails, writes nothing (on SQLite it always writes nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from issuer.store.database import Database
from issuer.store.signin import CodeStore, ConsentStore, SessionStore, Spend, StoredCode
from issuer.store.tables import AuthorizationCode, BrowserSession, RefreshFamily, RefreshToken, User
from issuer.store.users import UserStore
from tests import support

NOW = 1_900_000_000
IDLE = 3600
ABSOLUTE = 8 * 3600


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def new_session(db: Database, subject: str = "usr_1", now: int = NOW) -> tuple[str, bytes]:
    cookie = secrets.token_urlsafe(32)
    session_id = "bs_" + secrets.token_urlsafe(8)
    async with db.transaction() as conn:
        await SessionStore().create(
            conn,
            digest=digest(cookie),
            session_id=session_id,
            subject=subject,
            auth_time=now,
            now=now,
            idle_ttl=IDLE,
            absolute_ttl=ABSOLUTE,
        )
    return session_id, digest(cookie)


async def new_code(
    db: Database, *, ttl: int = 60, now: int = NOW, session_id: str = "bs_1", subject: str = "usr_1"
) -> bytes:
    code = digest(secrets.token_urlsafe(32))
    async with db.transaction() as conn:
        await CodeStore().create(
            conn,
            digest=code,
            client_id="cli_spa",
            redirect_uri="https://app.example/cb",
            code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            scope="openid read",
            nonce="n-0S6_WzA2Mj",
            session_id=session_id,
            subject=subject,
            auth_time=now - 5,
            now=now,
            ttl=ttl,
        )
    return code


# ---------------------------------------------------------------- sessions


async def test_a_session_stores_the_cookie_digest_and_never_the_cookie(db: Database) -> None:
    session_id, cookie_digest = await new_session(db)
    async with db.transaction() as conn:
        rows = (await conn.execute(select(BrowserSession.__table__))).all()  # type: ignore[attr-defined]
    assert [(row.id, bytes(row.digest)) for row in rows] == [(session_id, cookie_digest)]
    assert len(cookie_digest) == 32


async def test_a_session_is_live_until_its_idle_expiry_and_a_use_extends_it(db: Database) -> None:
    store = SessionStore()
    _, cookie = await new_session(db)
    async with db.transaction() as conn:
        assert await store.live(conn, cookie, NOW + IDLE - 1) is not None
        assert await store.live(conn, cookie, NOW + IDLE) is None
        assert await store.touch(conn, cookie, NOW + IDLE - 1, IDLE)
        live = await store.live(conn, cookie, NOW + IDLE + 10)
    assert (
        live is not None
        and live.idle_expires_at == NOW + 2 * IDLE - 1
        and live.last_used_at == NOW + IDLE - 1
    )


async def test_an_idle_expired_session_cannot_be_revived_by_a_use(db: Database) -> None:
    store = SessionStore()
    _, cookie = await new_session(db)
    async with db.transaction() as conn:
        assert not await store.touch(conn, cookie, NOW + IDLE, IDLE)
        assert await store.live(conn, cookie, NOW + IDLE) is None


async def test_uses_never_extend_a_session_past_its_absolute_expiry(db: Database) -> None:
    store = SessionStore()
    _, cookie = await new_session(db)
    async with db.transaction() as conn:
        at = NOW
        while at + IDLE - 1 < NOW + ABSOLUTE:
            at += IDLE - 1
            if not await store.touch(conn, cookie, at, IDLE):
                break
        session = await store.live(conn, cookie, NOW + ABSOLUTE - 1)
        assert session is not None and session.idle_expires_at == NOW + ABSOLUTE
        assert await store.live(conn, cookie, NOW + ABSOLUTE) is None


async def test_an_ended_session_is_not_live_and_keeps_its_first_reason(db: Database) -> None:
    store = SessionStore()
    session_id, cookie = await new_session(db)
    async with db.transaction() as conn:
        assert await store.end(conn, session_id, NOW + 10, "logout")
        assert not await store.end(conn, session_id, NOW + 20, "operator")
        assert await store.live(conn, cookie, NOW + 11) is None
        assert not await store.touch(conn, cookie, NOW + 11, IDLE)
        ended = await store.by_id(conn, session_id)
    assert ended is not None and (ended.ended_at, ended.ended_reason) == (NOW + 10, "logout")


async def test_ending_a_subject_ends_only_its_live_sessions(db: Database) -> None:
    store = SessionStore()
    first, _ = await new_session(db, "usr_1")
    second, _ = await new_session(db, "usr_1", now=NOW + 1)
    other, other_cookie = await new_session(db, "usr_2")
    async with db.transaction() as conn:
        assert await store.end(conn, first, NOW + 5, "logout")
        ended = await store.end_subject(conn, "usr_1", NOW + 10, "operator")
        assert ended == [second]
        assert [s.id for s in await store.sessions(conn, "usr_1")] == [second, first]
        assert await store.sessions(conn, "usr_1", live_at=NOW + 11) == []
        assert await store.live(conn, other_cookie, NOW + 11) is not None
        assert [s.id for s in await store.sessions(conn, "usr_2", live_at=NOW + 11)] == [other]


# ---------------------------------------------------------------- codes


async def test_a_code_is_spent_once_with_everything_it_is_bound_to(db: Database) -> None:
    store = CodeStore()
    code = await new_code(db)
    async with db.transaction() as conn:
        first = await store.spend(conn, code, NOW + 1)
    assert first.outcome is Spend.SPENT and first.code is not None
    bound = first.code
    assert (
        bound.client_id,
        bound.redirect_uri,
        bound.scope,
        bound.nonce,
        bound.session_id,
        bound.subject,
    ) == (
        "cli_spa",
        "https://app.example/cb",
        "openid read",
        "n-0S6_WzA2Mj",
        "bs_1",
        "usr_1",
    )
    assert bound.code_challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert bound.used_at == NOW + 1


async def test_a_second_use_is_a_replay_that_names_what_the_first_use_issued(db: Database) -> None:
    store = CodeStore()
    code = await new_code(db)
    async with db.transaction() as conn:
        assert (await store.spend(conn, code, NOW + 1, "sid_first")).outcome is Spend.SPENT
    async with db.transaction() as conn:
        again = await store.spend(conn, code, NOW + 2)
    assert again.outcome is Spend.REPLAYED
    assert again.code is not None and again.code.family_id == "sid_first" and again.code.used_at == NOW + 1


async def test_an_expired_code_is_refused_and_stays_unspent(db: Database) -> None:
    store = CodeStore()
    code = await new_code(db, ttl=60)
    async with db.transaction() as conn:
        late = await store.spend(conn, code, NOW + 60)
    assert late.outcome is Spend.EXPIRED and late.code is not None and late.code.used_at is None


async def test_an_unknown_code_is_unknown(db: Database) -> None:
    async with db.transaction() as conn:
        result = await CodeStore().spend(conn, digest("never issued"), NOW)
    assert (result.outcome, result.code) == (Spend.UNKNOWN, None)


async def test_of_twenty_racing_exchanges_exactly_one_spends_the_code(db: Database) -> None:
    store = CodeStore()
    code = await new_code(db)

    async def exchange() -> Spend:
        async with db.transaction() as conn:
            return (await store.spend(conn, code, NOW + 1)).outcome

    outcomes = await asyncio.gather(*(exchange() for _ in range(20)))
    assert sorted(outcome.value for outcome in outcomes) == ["replayed"] * 19 + ["spent"]


async def test_pruning_deletes_only_codes_expired_before_the_cut(db: Database) -> None:
    store = CodeStore()
    old = await new_code(db, ttl=10)
    fresh = await new_code(db, ttl=600)
    async with db.transaction() as conn:
        assert await store.prune(conn, NOW + 11) == 1
        left = [bytes(row.digest) for row in await conn.execute(select(AuthorizationCode.__table__.c.digest))]  # type: ignore[attr-defined]
    assert left == [fresh] and old not in left


# ---------------------------------------------------------------- the one-statement exchange

VERIFIER_S256 = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # new_code's challenge (RFC 7636 B)
FAMILY_ABSOLUTE = 30 * 24 * 3600
A = AuthorizationCode.__table__  # type: ignore[attr-defined]
S = BrowserSession.__table__  # type: ignore[attr-defined]
F = RefreshFamily.__table__  # type: ignore[attr-defined]
T = RefreshToken.__table__  # type: ignore[attr-defined]
U = User.__table__  # type: ignore[attr-defined]


async def bound_code(db: Database) -> tuple[bytes, str]:
    """A live user, a live browser session of theirs and a code of that session: (code, session id)."""
    async with db.transaction() as conn:
        await UserStore().create(
            conn, id="usr_1", username="alice", password_hash="x", created_at=NOW, updated_at=NOW
        )
    session_id, _ = await new_session(db)
    return await new_code(db, session_id=session_id), session_id


async def exchange(db: Database, code: bytes, **overrides: Any) -> StoredCode | None:
    arguments: dict[str, Any] = {
        "digest": code,
        "client_id": "cli_spa",
        "redirect_uri": "https://app.example/cb",
        "challenge": VERIFIER_S256,
        "family_id": "sid_1",
        "refresh_digest": digest("first refresh token"),
        "now": NOW + 1,
        "idle_ttl": IDLE,
        "absolute_ttl": FAMILY_ABSOLUTE,
    }
    return await CodeStore().exchange(db, **(arguments | overrides))


async def written(db: Database, code: bytes) -> tuple[Any, Any, list[Any], list[Any]]:
    """The code's used_at and family_id, the families and the refresh tokens."""
    async with db.transaction() as conn:
        row = (await conn.execute(select(A.c.used_at, A.c.family_id).where(A.c.digest == code))).one()
        families = (await conn.execute(select(F))).all()
        tokens = (await conn.execute(select(T))).all()
    return row.used_at, row.family_id, families, tokens


async def test_exchange_commits_the_spend_the_family_and_its_first_token_in_one_statement(
    db: Database,
) -> None:
    code, session_id = await bound_code(db)
    won = await exchange(db, code)
    used_at, family_id, families, tokens = await written(db, code)
    if db.dialect == "sqlite":  # no one-statement path: the caller spends the code itself
        assert (won, used_at, family_id, families, tokens) == (None, None, None, [], [])
        return
    assert won is not None
    assert (won.used_at, won.family_id, won.subject, won.scope, won.session_id) == (
        NOW + 1,
        "sid_1",
        "usr_1",
        "openid read",
        session_id,
    )
    assert (won.nonce, won.auth_time, won.redirect_uri) == ("n-0S6_WzA2Mj", NOW - 5, "https://app.example/cb")
    assert (used_at, family_id) == (NOW + 1, "sid_1")
    [family] = families
    assert (family.id, family.client_id, family.subject, family.scope, family.browser_session_id) == (
        "sid_1",
        "cli_spa",
        "usr_1",
        "openid read",
        session_id,
    )
    assert (family.created_at, family.expires_at, family.last_used_at, family.revoked_at) == (
        NOW + 1,
        NOW + 1 + FAMILY_ABSOLUTE,
        NOW + 1,
        None,
    )
    [token] = tokens
    assert (bytes(token.digest), token.family_id, token.client_id, token.scope) == (
        digest("first refresh token"),
        "sid_1",
        "cli_spa",
        "openid read",
    )
    assert (token.issued_at, token.expires_at, token.used_at) == (NOW + 1, NOW + 1 + IDLE, None)


async def test_exchange_never_gives_the_first_token_more_than_the_family(db: Database) -> None:
    code, _ = await bound_code(db)
    won = await exchange(db, code, absolute_ttl=IDLE - 10)
    _, _, _, tokens = await written(db, code)
    if db.dialect == "postgresql":
        assert won is not None and [token.expires_at for token in tokens] == [NOW + 1 + IDLE - 10]


async def test_exchange_without_the_refresh_grant_records_the_sid_and_starts_no_family(db: Database) -> None:
    code, _ = await bound_code(db)
    won = await exchange(db, code, refresh_digest=None)
    used_at, family_id, families, tokens = await written(db, code)
    assert (families, tokens) == ([], [])
    if db.dialect == "postgresql":
        assert won is not None and (used_at, family_id) == (NOW + 1, "sid_1")


async def _write(db: Database, statement: Any) -> None:
    async with db.transaction() as conn:
        await conn.execute(statement)


async def _spent_before(db: Database, session_id: str, code: bytes) -> None:
    async with db.transaction() as conn:
        assert (await CodeStore().spend(conn, code, NOW, "sid_first")).outcome is Spend.SPENT


async def _session_ended(db: Database, session_id: str, code: bytes) -> None:
    async with db.transaction() as conn:
        assert await SessionStore().end(conn, session_id, NOW, "logout")


async def _session_idle_expired(db: Database, session_id: str, code: bytes) -> None:
    await _write(db, update(S).where(S.c.id == session_id).values(idle_expires_at=NOW + 1))


async def _session_absolutely_expired(db: Database, session_id: str, code: bytes) -> None:
    await _write(db, update(S).where(S.c.id == session_id).values(expires_at=NOW + 1))


async def _no_session(db: Database, session_id: str, code: bytes) -> None:
    await _write(db, S.delete().where(S.c.id == session_id))


async def _user_disabled(db: Database, session_id: str, code: bytes) -> None:
    async with db.transaction() as conn:
        await UserStore().set_disabled(conn, "usr_1", NOW, NOW)


async def _no_user(db: Database, session_id: str, code: bytes) -> None:
    await _write(db, U.delete().where(U.c.id == "usr_1"))


# Each way a code may not be exchanged at ``now = NOW + 1``: a change to the database before the
# exchange (given the session id and the code) and other arguments. The statement must write
# nothing for any of them.
Change = Callable[[Database, str, bytes], Awaitable[None]]
REFUSED: dict[str, tuple[Change | None, dict[str, Any]]] = {
    "spent before (a replay)": (_spent_before, {}),
    "expired": (None, {"now": NOW + 60}),
    "unknown": (None, {"digest": digest("never issued")}),
    "another client": (None, {"client_id": "cli_other"}),
    "another redirect URI": (None, {"redirect_uri": "https://app.example/other"}),
    "a wrong verifier": (None, {"challenge": "x" * 43}),
    "the session ended": (_session_ended, {}),
    "the session idle-expired": (_session_idle_expired, {}),
    "the session absolutely expired": (_session_absolutely_expired, {}),
    "no such session": (_no_session, {}),
    "the user disabled": (_user_disabled, {}),
    "no such user": (_no_user, {}),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_exchange_writes_nothing_when_any_binding_fails(db: Database, case: str) -> None:
    change, overrides = REFUSED[case]
    code, session_id = await bound_code(db)
    if change is not None:
        await change(db, session_id, code)
    before = await written(db, code)
    assert await exchange(db, code, **overrides) is None
    assert await written(db, code) == before  # not spent, no family, no token


async def test_of_twenty_racing_one_statement_exchanges_at_most_one_wins(db: Database) -> None:
    code, _ = await bound_code(db)
    won = await asyncio.gather(
        *(exchange(db, code, family_id=f"sid_{n}", refresh_digest=digest(f"rt {n}")) for n in range(20))
    )
    winners = [code for code in won if code is not None]
    _, family_id, families, tokens = await written(db, code)
    if db.dialect == "sqlite":
        assert (winners, families, tokens) == ([], [], [])
        return
    [winner] = winners
    assert family_id == winner.family_id
    assert [family.id for family in families] == [winner.family_id]
    assert [token.family_id for token in tokens] == [winner.family_id]


async def test_exchanges_that_waited_for_a_concurrent_spend_write_nothing(pg_url: str) -> None:
    """PostgreSQL: the statement re-checks ``used_at`` on the row version it waited for. Exchanges
    that read the code unused while another transaction was spending it, then waited for its row
    lock, must find it spent once that transaction commits: no second spend, no family."""
    db = Database(pg_url)
    try:
        code, _ = await bound_code(db)
        async with db.transaction() as holder:
            assert (await CodeStore().spend(holder, code, NOW, "sid_first")).outcome is Spend.SPENT
            racers = [
                asyncio.create_task(
                    exchange(db, code, family_id=f"sid_{n}", refresh_digest=digest(f"rt {n}"))
                )
                for n in range(4)
            ]
            await support.until_waiting_for_a_lock(db, 4)
        assert await asyncio.gather(*racers) == [None] * 4
        assert await written(db, code) == (NOW, "sid_first", [], [])
    finally:
        await db.close()


async def test_an_exchange_waits_for_a_logout_that_has_begun_and_then_writes_nothing(pg_url: str) -> None:
    """PostgreSQL: the statement reads the browser session ``FOR SHARE``. A logout that has ended
    the session but not yet committed (it reads the session's families next) makes the exchange
    wait; once the logout commits, the exchange finds the session ended and writes nothing. Read
    without the lock, the exchange would commit a family the logout had already looked past."""
    db = Database(pg_url)
    try:
        code, session_id = await bound_code(db)
        async with db.transaction() as logout:
            assert await SessionStore().end(logout, session_id, NOW + 1, "logout")
            racer = asyncio.create_task(exchange(db, code))
            await support.until_waiting_for_a_lock(db, 1)
        assert await racer is None
        assert await written(db, code) == (None, None, [], [])
    finally:
        await db.close()


async def test_a_locked_session_read_waits_for_a_logout_that_has_begun(pg_url: str) -> None:
    """PostgreSQL: the transactional exchange's read of the session (``by_id(lock=True)``) waits
    for an uncommitted end of it and then sees it ended (so the exchange is refused); and while
    that read's transaction is open, an end of the session waits for it."""
    db = Database(pg_url)
    try:
        _, session_id = await bound_code(db)
        async with db.transaction() as logout:
            assert await SessionStore().end(logout, session_id, NOW + 1, "logout")

            async def read() -> Any:
                async with db.transaction() as conn:
                    return await SessionStore().by_id(conn, session_id, lock=True)

            reader = asyncio.create_task(read())
            await support.until_waiting_for_a_lock(db, 1)
        seen = await reader
        assert seen is not None and seen.ended_at == NOW + 1 and not seen.live_at(NOW + 2)

        other, _ = await new_session(db)
        async with db.transaction() as exchange_tx:
            assert (await SessionStore().by_id(exchange_tx, other, lock=True)) is not None

            async def end() -> bool:
                async with db.transaction() as conn:
                    return await SessionStore().end(conn, other, NOW + 2, "logout")

            ender = asyncio.create_task(end())
            await support.until_waiting_for_a_lock(db, 1)
        assert await ender
    finally:
        await db.close()


# ---------------------------------------------------------------- consents


async def test_consent_is_remembered_per_user_client_and_scope(db: Database) -> None:
    store = ConsentStore()
    async with db.transaction() as conn:
        await store.grant(conn, "usr_1", "cli_a", ["openid", "read"], NOW)
        await store.grant(conn, "usr_1", "cli_a", ["read", "write"], NOW + 5)  # read again: kept
        await store.grant(conn, "usr_1", "cli_b", ["openid"], NOW)
        await store.grant(conn, "usr_2", "cli_a", [], NOW)
        assert await store.granted(conn, "usr_1", "cli_a") == {"openid", "read", "write"}
        assert await store.granted(conn, "usr_1", "cli_b") == {"openid"}
        assert await store.granted(conn, "usr_2", "cli_a") == set()


async def test_revoking_consent_forgets_one_client_or_all(db: Database) -> None:
    store = ConsentStore()
    async with db.transaction() as conn:
        await store.grant(conn, "usr_1", "cli_a", ["openid", "read"], NOW)
        await store.grant(conn, "usr_1", "cli_b", ["openid"], NOW)
        assert await store.revoke(conn, "usr_1", "cli_a") == 2
        assert await store.granted(conn, "usr_1", "cli_a") == set()
        assert await store.granted(conn, "usr_1", "cli_b") == {"openid"}
        assert await store.revoke(conn, "usr_1") == 1
        assert await store.granted(conn, "usr_1", "cli_b") == set()
