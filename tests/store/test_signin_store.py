"""Browser sign-in records on SQLite and PostgreSQL: sessions, one-time codes, consents.

DESIGN.md, "Browser sign-in": sessions keep only the cookie's digest and end with a reason; codes
are single use, decided by one conditional update, and a replay is told apart from an unknown or
expired code; consents are remembered per user, client and scope.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from sqlalchemy import select

from issuer.store.database import Database
from issuer.store.signin import CodeStore, ConsentStore, SessionStore, Spend
from issuer.store.tables import AuthorizationCode, BrowserSession

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


async def new_code(db: Database, *, ttl: int = 60, now: int = NOW) -> bytes:
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
            session_id="bs_1",
            subject="usr_1",
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
