"""A model-based test of the refresh-token store, on SQLite and PostgreSQL (DESIGN.md, refresh
tokens; RFC 9700 4.14.2).

Hypothesis drives random interleavings of the store's operations (start a family, present a live
token, replay the token just used inside and outside the grace window, present an older token,
present with another client, revoke a family, revoke a subject, let time pass idle and absolute
expiry) against the real store, through the entry points the refresh grant and the revocation
use: :meth:`RefreshStore.rotate` with a :class:`Presentation` built as the grant builds it,
:meth:`RefreshStore.revoke_family` and :meth:`RefreshStore.families`. A small reference model,
written from DESIGN.md rather than from the store's code, says what each presentation must
answer; after every step the database must agree with it: which tokens exist, which are spent,
which are live, which families are revoked.

Time is the model's (``Presentation.now``): nothing sleeps. Every owner presentation comes from
one client address. The run is derandomised (the same examples every time: no flaky failures)
and bounded to a few seconds per backend.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from issuer.store.database import Database
from issuer.store.refresh import Narrowing, Outcome, Presentation, RefreshStore
from issuer.store.tables import RefreshFamily, RefreshToken
from issuer.tokens import RefreshTokens

F = RefreshFamily.__table__  # type: ignore[attr-defined]
T = RefreshToken.__table__  # type: ignore[attr-defined]

START = 1_900_000_000
IDLE = 100  # each token's idle lifetime
ABSOLUTE = 250  # the family's: a chain outlives a few idle periods, then ends
GRACE = 10  # the replay window of the immediate predecessor
SCOPE = "read write"
OWNER_ADDRESS = "192.0.2.1"
CLIENTS = ("cli_a", "cli_b")
SUBJECTS = ("usr_1", "usr_2")

R = TypeVar("R")


@dataclass
class ModelFamily:
    family_id: str
    client_id: str
    subject: str
    expires_at: int
    revoked: bool = False


@dataclass
class ModelToken:
    token: str
    family_id: str
    expires_at: int
    used_at: int | None = None


class RefreshModel(RuleBasedStateMachine):
    """The store against the model. Class attributes are set per test run (see :func:`_run`)."""

    loop: ClassVar[asyncio.AbstractEventLoop]
    db: ClassVar[Database]
    tokens_: ClassVar[RefreshTokens]
    store: ClassVar[RefreshStore]
    seen: ClassVar[Counter[Outcome]]  # outcomes met over the whole run: the bounded run stays meaningful

    issued = Bundle("issued")

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.run_id = secrets.token_hex(4)  # the database outlives one example: names are per example
        self.families: dict[str, ModelFamily] = {}
        self.tokens: dict[str, ModelToken] = {}
        self.last_used: str | None = None  # the token spent most recently (the replay candidate)
        self.presented = 0  # presentations alternate between the two ways the store narrows

    # ------------------------------------------------------------------ plumbing

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return self.loop.run_until_complete(coroutine)

    def subject(self, name: str) -> str:
        return f"{name}_{self.run_id}"

    def presentation(self, token: str, client_id: str) -> Presentation:
        tokens = self.tokens_
        return Presentation(  # as issuer.grants.refresh_token builds it
            digest=tokens.digest(token),
            successor_digest=tokens.digest(tokens.successor_of(token)),
            client_id=client_id,
            address=OWNER_ADDRESS,
            now=self.now,
            idle_ttl=IDLE,
            grace=GRACE,
        )

    def live(self, token: ModelToken) -> bool:
        family = self.families[token.family_id]
        return (
            token.used_at is None
            and token.expires_at > self.now
            and not family.revoked
            and family.expires_at > self.now
        )

    # ------------------------------------------------------------------ the reference model

    def expect(self, token: str, client_id: str) -> Outcome:
        """What DESIGN.md says a presentation of ``token`` by ``client_id`` must answer now."""
        known = self.tokens.get(token)
        if known is None:
            return Outcome.UNKNOWN
        family = self.families[known.family_id]
        if client_id != family.client_id:
            return Outcome.FOREIGN  # nothing about the family changes
        if family.revoked:
            return Outcome.REVOKED
        if family.expires_at <= self.now:
            return Outcome.EXPIRED
        if known.used_at is None:
            return Outcome.ROTATED if known.expires_at > self.now else Outcome.EXPIRED
        successor = self.tokens.get(self.tokens_.successor_of(token))
        if (
            self.now - known.used_at <= GRACE
            and successor is not None
            and successor.used_at is None
            and successor.expires_at > self.now
        ):
            return Outcome.REPLAYED  # the immediate predecessor, inside the window: same successor
        return Outcome.REUSED  # any other reuse: the whole family goes

    def apply(self, token: str, outcome: Outcome) -> str | None:
        """Change the model as ``outcome`` says; the successor the client now holds, if any."""
        if outcome is Outcome.ROTATED:
            spent = self.tokens[token]
            spent.used_at = self.now
            self.last_used = token
            family = self.families[spent.family_id]
            successor = self.tokens_.successor_of(token)
            self.tokens[successor] = ModelToken(
                successor, family.family_id, min(self.now + IDLE, family.expires_at)
            )
            return successor
        if outcome is Outcome.REPLAYED:
            return self.tokens_.successor_of(token)  # the same one, not a new sibling
        if outcome is Outcome.REUSED:
            self.families[self.tokens[token].family_id].revoked = True
        return None

    def present(self, token: str, client_id: str) -> str | None:
        expected = self.expect(token, client_id)
        # A Narrowing (as the grant passes it) takes PostgreSQL's one-statement rotation; any other
        # callable the transactional path. Both must agree with the model.
        self.presented += 1
        narrow = Narrowing(None, frozenset(SCOPE.split())) if self.presented % 2 else (lambda scope: scope)
        result = self.run(self.store.rotate(self.db, self.presentation(token, client_id), narrow))
        assert result.outcome is expected, (result, expected)
        self.seen[expected] += 1
        known = self.tokens.get(token)
        if known is not None:
            family = self.families[known.family_id]
            assert result.family_id == family.family_id
            if expected in (Outcome.ROTATED, Outcome.REPLAYED):
                assert (result.subject, result.scope) == (family.subject, SCOPE)
                assert result.family_expires_at == family.expires_at
        return self.apply(token, expected)

    # ------------------------------------------------------------------ rules

    @initialize(target=issued)
    def first_login(self) -> str:
        return self.login(SUBJECTS[0], CLIENTS[0])

    @precondition(lambda self: len(self.families) < 5)
    @rule(target=issued, subject=st.sampled_from(SUBJECTS), client_id=st.sampled_from(CLIENTS))
    def start_family(self, subject: str, client_id: str) -> str:
        return self.login(subject, client_id)

    def login(self, subject: str, client_id: str) -> str:
        token = self.tokens_.new()
        family_id = f"sid_{self.run_id}_{len(self.families)}"

        async def start() -> int:
            async with self.db.transaction() as conn:
                return await self.store.start_family(
                    conn,
                    family_id=family_id,
                    client_id=client_id,
                    subject=self.subject(subject),
                    scope=SCOPE,
                    digest=self.tokens_.digest(token),
                    now=self.now,
                    idle_ttl=IDLE,
                    absolute_ttl=ABSOLUTE,
                )

        expires = self.run(start())
        family = ModelFamily(family_id, client_id, self.subject(subject), self.now + ABSOLUTE)
        self.families[family_id] = family
        self.tokens[token] = ModelToken(token, family_id, min(self.now + IDLE, self.now + ABSOLUTE))
        assert expires == self.tokens[token].expires_at
        return token

    @precondition(lambda self: any(self.live(token) for token in self.tokens.values()))
    @rule(target=issued, data=st.data())
    def rotate_a_live_token(self, data: st.DataObject) -> str:
        live = [token.token for token in self.tokens.values() if self.live(token)]  # issue order
        token = data.draw(st.sampled_from(live), label="live token")
        successor = self.present(token, self.owner(token))
        assert successor is not None
        return successor

    @precondition(lambda self: self.last_used is not None)
    @rule(wait=st.sampled_from([0, 1, GRACE, GRACE + 1]))
    def replay_the_token_just_used(self, wait: int) -> None:
        """The token spent last, again ``wait`` seconds after it was spent (unless time has passed
        beyond that already): up to GRACE the same successor comes back, after it is reuse."""
        assert self.last_used is not None
        spent_at = self.tokens[self.last_used].used_at
        assert spent_at is not None
        self.now = max(self.now, spent_at + wait)
        self.present(self.last_used, self.owner(self.last_used))

    @rule(token=issued)
    def present_any_token(self, token: str) -> None:
        """Any token ever issued, by its owner: older ones are reuse, spent ones outside the window too."""
        self.present(token, self.owner(token))

    @rule(token=issued)
    def present_with_the_other_client(self, token: str) -> None:
        other = next(client for client in CLIENTS if client != self.owner(token))
        self.present(token, other)

    @rule(client_id=st.sampled_from(CLIENTS))
    def present_an_unknown_token(self, client_id: str) -> None:
        self.present(self.tokens_.new(), client_id)

    @rule(token=issued)
    def revoke_family(self, token: str) -> None:
        family = self.families[self.tokens[token].family_id]

        async def revoke() -> bool:
            async with self.db.transaction() as conn:
                return await self.store.revoke_family(conn, family.family_id, self.now, "model: revoke")

        assert self.run(revoke()) is (not family.revoked)  # True only when this call revoked it
        family.revoked = True

    @rule(subject=st.sampled_from(SUBJECTS))
    def revoke_subject(self, subject: str) -> None:
        """Log out everywhere, as issuer.revocation does it: every live family of the subject."""

        async def revoke() -> list[str]:
            async with self.db.transaction() as conn:
                rows = await self.store.families(conn, subject=self.subject(subject), live_at=self.now)
                ended = [row.id for row in rows]
                for family_id in ended:
                    assert await self.store.revoke_family(conn, family_id, self.now, "model: log out")
                return ended

        ended = self.run(revoke())
        live = [
            f.family_id
            for f in self.families.values()
            if f.subject == self.subject(subject) and not f.revoked and f.expires_at > self.now
        ]
        assert sorted(ended) == sorted(live)
        for family_id in ended:
            self.families[family_id].revoked = True

    @rule(
        seconds=st.one_of(
            st.sampled_from([1, GRACE, GRACE + 1, IDLE - 1, IDLE, ABSOLUTE]), st.integers(0, IDLE + GRACE)
        )
    )
    def advance_time(self, seconds: int) -> None:
        self.now += seconds

    def owner(self, token: str) -> str:
        return self.families[self.tokens[token].family_id].client_id

    # ------------------------------------------------------------------ the database agrees

    @invariant()
    def store_matches_model(self) -> None:
        family_ids = list(self.families)
        if not family_ids:
            return

        async def read() -> tuple[list[Any], list[Any]]:
            async with self.db.transaction() as conn:
                families = (
                    await conn.execute(
                        select(F.c.id, F.c.revoked_at, F.c.expires_at).where(F.c.id.in_(family_ids))
                    )
                ).all()
                tokens = (
                    await conn.execute(
                        select(T.c.digest, T.c.family_id, T.c.used_at, T.c.expires_at).where(
                            T.c.family_id.in_(family_ids)
                        )
                    )
                ).all()
            return list(families), list(tokens)

        families, tokens = self.run(read())
        assert {row.id: (row.revoked_at is not None, row.expires_at) for row in families} == {
            f.family_id: (f.revoked, f.expires_at) for f in self.families.values()
        }
        digest = self.tokens_.digest
        assert {bytes(row.digest): (row.family_id, row.used_at, row.expires_at) for row in tokens} == {
            digest(t.token): (t.family_id, t.used_at, t.expires_at) for t in self.tokens.values()
        }
        # which tokens are live: the one unspent, unexpired token of every live family, and no other
        revoked = {row.id for row in families if row.revoked_at is not None}
        live_in_store = {
            bytes(row.digest)
            for row in tokens
            if row.used_at is None
            and row.expires_at > self.now
            and row.family_id not in revoked
            and self.families[row.family_id].expires_at > self.now
        }
        assert live_in_store == {digest(t.token) for t in self.tokens.values() if self.live(t)}
        for family in self.families.values():
            unspent = [
                t for t in self.tokens.values() if t.family_id == family.family_id and t.used_at is None
            ]
            assert len(unspent) == 1  # the family never forks


def _run(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    db = Database(database_url, pool_size=2)
    RefreshModel.loop = loop
    RefreshModel.db = db
    RefreshModel.tokens_ = RefreshTokens(secrets.token_bytes(32))
    RefreshModel.store = RefreshStore()
    RefreshModel.seen = Counter()
    try:
        run_state_machine_as_test(
            RefreshModel,
            settings=settings(
                max_examples=40,
                stateful_step_count=30,
                deadline=None,
                derandomize=True,  # the same examples every run
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(db.close())
        loop.close()
    assert set(RefreshModel.seen) == set(Outcome), RefreshModel.seen  # every answer was exercised


def test_the_store_agrees_with_the_model(database_url: str) -> None:
    _run(database_url)
