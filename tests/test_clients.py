"""Client secrets: 256 bits, stored as keyed HMAC-SHA-256, two live secrets while rotating."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from sqlalchemy import select

from issuer.errors import InvalidClient
from issuer.keys.material import b64decode
from issuer.runtime import Runtime
from issuer.store.tables import Client


async def test_secret_is_256_bits_and_stored_only_as_a_keyed_digest(runtime: Runtime) -> None:
    created = await runtime.clients.create(name="a", grant_types=["client_credentials"], scopes=["read"])
    assert created.client_secret.startswith("ics_") and len(b64decode(created.client_secret[4:])) == 32
    async with runtime.db.transaction() as conn:
        row = (await conn.execute(select(Client.__table__))).one()  # type: ignore[attr-defined]
    stored = bytes(row.secret_digest)
    assert created.client_secret.encode() not in stored and created.client_secret not in str(tuple(row))
    # Not a plain hash: without the key outside the database the digest cannot be checked.
    assert stored != hashlib.sha256(created.client_secret.encode()).digest()
    assert stored != hmac.new(b"", created.client_secret.encode(), hashlib.sha256).digest()
    assert stored == runtime.clients.digest(created.client_secret)


async def test_authentication(runtime: Runtime) -> None:
    created = await runtime.clients.create(name="a", grant_types=["client_credentials"], scopes=["read"])
    record = await runtime.clients.authenticate(created.client_id, created.client_secret, basic=True)
    assert record.client_id == created.client_id and record.scopes == {"read"}
    for client_id, secret in (
        (created.client_id, created.client_secret + "x"),
        ("cli_unknown", "x"),
        ("x" * 500, "x"),
    ):
        with pytest.raises(InvalidClient):
            await runtime.clients.authenticate(client_id, secret, basic=False)


async def test_rotation_keeps_two_live_secrets_until_the_deadline(runtime: Runtime) -> None:
    created = await runtime.clients.create(name="a", grant_types=["client_credentials"], scopes=["read"])
    rotated = await runtime.clients.rotate_secret(created.client_id, keep_previous_for=3600)
    await runtime.clients.authenticate(created.client_id, rotated.client_secret, basic=True)
    await runtime.clients.authenticate(created.client_id, created.client_secret, basic=True)
    third = await runtime.clients.rotate_secret(created.client_id, keep_previous_for=0)
    await runtime.clients.authenticate(created.client_id, third.client_secret, basic=True)
    for dead in (created.client_secret, rotated.client_secret):
        with pytest.raises(InvalidClient):
            await runtime.clients.authenticate(created.client_id, dead, basic=True)


async def test_expired_previous_secret_is_refused(runtime: Runtime) -> None:
    created = await runtime.clients.create(name="a", grant_types=["client_credentials"], scopes=["read"])
    await runtime.clients.rotate_secret(created.client_id, keep_previous_for=3600)
    async with runtime.db.transaction() as conn:
        await runtime.clients.store.update(conn, created.client_id, previous_secret_expires_at=1)
    runtime.clients.invalidate()
    with pytest.raises(InvalidClient):
        await runtime.clients.authenticate(created.client_id, created.client_secret, basic=True)


async def test_a_disabled_client_cannot_authenticate(runtime: Runtime) -> None:
    created = await runtime.clients.create(name="a", grant_types=["client_credentials"], scopes=["read"])
    async with runtime.db.transaction() as conn:
        await runtime.clients.store.update(conn, created.client_id, disabled_at=1)
    runtime.clients.invalidate()
    with pytest.raises(InvalidClient):
        await runtime.clients.authenticate(created.client_id, created.client_secret, basic=True)
