"""Issue 14, point 5: request metadata a client controls can never cancel a revocation.

The refresh grant is driven directly (``refresh_token.handle`` with a real client, user and
runtime, on SQLite and PostgreSQL), with the hostile address passed as the address derived from
the request, so that the test does not depend on how the HTTP layer derives it.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select, text

from issuer.clients import ClientRecord
from issuer.errors import InvalidGrant
from issuer.grants import password, refresh_token
from issuer.grants.base import TokenRequest
from issuer.runtime import Runtime
from issuer.store.bounded import ADDRESS_CHARS, bounded_text, stored_address
from issuer.store.tables import AuditEvent, RefreshFamily, RefreshToken

PASSWORD = "correct horse battery staple"
AUDIT = AuditEvent.__table__  # type: ignore[attr-defined]
FAMILIES = RefreshFamily.__table__  # type: ignore[attr-defined]
TOKENS = RefreshToken.__table__  # type: ignore[attr-defined]

HOSTILE = {
    "long": "203.0.113." + "9" * 5000,
    "nul": "192.0.2.1\x00; DROP TABLE audit_events",
    "non-utf-8 (surrogate escapes)": "\udcff\udcfe\udc80" + "x" * 10,
    "non-utf-8 (latin-1 mojibake)": "\xff\xfe\xc3\x28" * 40,
    "very long unicode": "\U0001f600\u00e9\u4e2d" * 2000,
    "control characters": "\r\n\t\x1b[31m",
    "looks marked": "?abc#0123456789abcdef0",
    "zone id with NUL": "fe80::1%\x00",
}


async def _client(runtime: Runtime) -> ClientRecord:
    created = await runtime.clients.create(
        name="app", grant_types=["password", "refresh_token"], scopes=["read"]
    )
    record = await runtime.clients.get(created.client_id)
    assert record is not None
    return record


async def _login(runtime: Runtime, client: ClientRecord, address: str) -> dict[str, str]:
    params = {"username": "alice", "password": PASSWORD}
    response = await password.handle(runtime.grants, TokenRequest(client, params, address))
    assert response.refresh_token is not None
    return {"access_token": response.access_token, "refresh_token": response.refresh_token}


async def _refresh(runtime: Runtime, client: ClientRecord, token: str, address: str) -> str:
    params = {"refresh_token": token}
    response = await refresh_token.handle(runtime.grants, TokenRequest(client, params, address))
    assert response.refresh_token is not None
    return response.refresh_token


async def _family_of(runtime: Runtime, token: str) -> str:
    async with runtime.db.transaction() as conn:
        row = await runtime.refresh_store.lookup(conn, runtime.grants.refresh_tokens.digest(token))
    assert row is not None
    return str(row.family_id)


async def _reuse_is_a_revocation(runtime: Runtime, client: ClientRecord, hostile: str) -> None:
    """A stolen token replayed from ``hostile``: the family is revoked, its sid denylisted, the
    reuse audited with a bounded address, whatever ``hostile`` holds."""
    first = await _login(runtime, client, hostile)
    family = await _family_of(runtime, first["refresh_token"])
    second = await _refresh(runtime, client, first["refresh_token"], hostile)  # the owner, from hostile
    await _refresh(runtime, client, second, hostile)  # so that `first` is no grace-window replay
    with pytest.raises(InvalidGrant):
        await _refresh(runtime, client, first["refresh_token"], hostile)  # the thief: reuse
    async with runtime.db.transaction() as conn:
        revoked = (
            await conn.execute(select(FAMILIES.c.revoked_at).where(FAMILIES.c.id == family))
        ).scalar_one()
        events = (
            await conn.execute(
                select(AUDIT).where(
                    AUDIT.c.event == "refresh_token.reuse_detected", AUDIT.c.family_id == family
                )
            )
        ).all()
        used_from = (
            await conn.execute(select(TOKENS.c.used_from).where(TOKENS.c.family_id == family))
        ).scalars()
        stored = [value for value in used_from if value is not None]
    assert revoked is not None, "the family lives on"
    assert await runtime.denylist.is_revoked({"sid": family}), "the family's sid is not denylisted"
    assert len(events) == 1, "the reuse left no audit event"
    (event,) = events
    assert event.address == stored_address(hostile) and len(event.address) <= ADDRESS_CHARS
    detail = json.loads(event.detail)
    assert detail["reused_from"] == event.address and detail["first_presented_from"] == event.address
    assert stored and all(value == event.address for value in stored)
    # The successor the thief may hold is dead too.
    with pytest.raises(InvalidGrant):
        await _refresh(runtime, client, runtime.grants.refresh_tokens.successor_of(second), "192.0.2.9")


async def test_reuse_detection_with_hostile_metadata(runtime: Runtime) -> None:
    await runtime.users.create("alice", PASSWORD)
    client = await _client(runtime)
    for name, hostile in HOSTILE.items():
        try:
            await _reuse_is_a_revocation(runtime, client, hostile)
        except Exception as error:
            raise AssertionError(f"hostile address {name!r}: {type(error).__name__}: {error}") from error


async def test_reuse_revokes_even_when_the_audit_insert_fails(runtime: Runtime) -> None:
    """The audit insert refused by the database itself (a trigger): the revocation still commits."""
    await runtime.users.create("alice", PASSWORD)
    client = await _client(runtime)
    async with runtime.db.transaction() as conn:
        if runtime.db.dialect == "postgresql":
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_reuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF NEW.event = 'refresh_token.reuse_detected' THEN "
                    "RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_reuse_audit BEFORE INSERT ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_reuse_audit()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_reuse_audit BEFORE INSERT ON audit_events "
                    "WHEN NEW.event = 'refresh_token.reuse_detected' "
                    "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
                )
            )
    first = await _login(runtime, client, "192.0.2.1")
    family = await _family_of(runtime, first["refresh_token"])
    second = await _refresh(runtime, client, first["refresh_token"], "192.0.2.1")
    await _refresh(runtime, client, second, "192.0.2.1")
    with pytest.raises(InvalidGrant):
        await _refresh(runtime, client, first["refresh_token"], "192.0.2.2")
    async with runtime.db.transaction() as conn:
        revoked = (
            await conn.execute(select(FAMILIES.c.revoked_at).where(FAMILIES.c.id == family))
        ).scalar_one()
    assert revoked is not None
    assert await runtime.denylist.is_revoked({"sid": family})
    assert runtime.audit.failures == 1


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8::0:1", "2001:db8::1"),  # canonical form
        ("testclient", "testclient"),  # a printable name that fits stays as it is
        ("a\x00b", "?a\\x00b#" + hashlib.sha256(b"a\x00b").hexdigest()[:16]),
        ("?x#y", "?\\x3fx\\x23y#" + hashlib.sha256(b"?x#y").hexdigest()[:16]),  # never mistaken for marked
    ],
)
def test_stored_address(value: str, stored: str) -> None:
    assert stored_address(value) == stored


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_bounded_forms_fit_and_are_plain_ascii(value: str) -> None:
    for limit, bounded in ((ADDRESS_CHARS, stored_address(value)), (64, bounded_text(value, 64))):
        assert bounded is not None and len(bounded) <= limit
        assert bounded.isascii() and bounded.isprintable() and "\x00" not in bounded
        assert bounded_text(bounded, limit) == bounded  # stable: storing it again changes nothing
