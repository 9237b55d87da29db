"""The lifecycle against real SQLite and PostgreSQL: each step when due, races, revocation, re-wrapping,
and what a database dump holds."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from issuer.keys import rotation
from issuer.keys.material import KeyMaterial
from issuer.keys.plan import LEEWAY
from issuer.keys.ring import PRIVATE_MEMBERS, KeyRing, KeyRingError, unseal
from issuer.settings import Settings
from issuer.store.database import Database
from issuer.store.keys import KeyStore
from tests.conftest import make_settings

T0 = 1_800_000_000


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        key_rotation_interval=1000,
        key_publish_ahead=100,
        key_reload_interval=10,
    )


@pytest.fixture
async def db(settings: Settings) -> Database:
    database = Database(settings.database_url)
    yield database  # type: ignore[misc]
    await database.close()


async def states(db: Database) -> dict[str, str]:
    async with db.transaction() as conn:
        return {k.kid: k.state for k in await KeyStore().load(conn)}


async def test_a_whole_cycle_step_by_step(db: Database, settings: Settings, material: KeyMaterial) -> None:
    first = await rotation.rotate(db, material, settings, now=T0)
    assert [s.action for s in first.done] == ["create-active"]
    a = first.done[0].kid
    assert (await rotation.rotate(db, material, settings, now=T0 + 899)).done == []  # nothing due
    created = await rotation.rotate(db, material, settings, now=T0 + 900)
    assert [s.action for s in created.done] == ["create-next"]
    b = created.done[0].kid
    assert await states(db) == {a: "active", b: "next"}
    # the ring an instance serves: the next key is published, the active one signs
    ring = KeyRing(db, material, "ES256")
    await ring.reload()
    assert ring.signer.kid == a and {k["kid"] for k in ring.jwks["keys"]} == {a, b}
    assert (await rotation.rotate(db, material, settings, now=T0 + 999)).done == []
    promoted = await rotation.rotate(db, material, settings, now=T0 + 1000)
    assert [(s.action, s.kid) for s in promoted.done] == [("promote", b)]
    assert await states(db) == {a: "retired", b: "active"}
    assert await ring.reload() and ring.signer.kid == b and {k["kid"] for k in ring.jwks["keys"]} == {a, b}
    horizon = T0 + 1000 + settings.key_reload_interval + settings.access_token_ttl + LEEWAY
    assert all(s.kid != a for s in (await rotation.rotate(db, material, settings, now=horizon - 1)).done)
    removed = await rotation.rotate(db, material, settings, now=horizon)
    assert ("remove", a) in [(s.action, s.kid) for s in removed.done]
    assert a not in await states(db)


async def test_a_client_with_a_longer_token_lifetime_keeps_the_retired_key_longer(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO clients (client_id, name, grant_types, scope, access_token_ttl, secret_digest, "
                "can_introspect, created_at, updated_at) VALUES ('c', 'c', 'client_credentials', '', 3600, "
                ":d, false, 0, 0)"
            ),
            {"d": b"x" * 32},
        )
    await rotation.rotate(db, material, settings, now=T0)
    await rotation.rotate(db, material, settings, now=T0 + 900)
    await rotation.rotate(db, material, settings, now=T0 + 1000)
    retired = [kid for kid, state in (await states(db)).items() if state == "retired"]
    default_horizon = T0 + 1000 + 10 + settings.access_token_ttl + LEEWAY
    await rotation.rotate(db, material, settings, now=default_horizon)
    assert retired[0] in await states(db)  # a 3600 s token signed by it may still be alive
    await rotation.rotate(db, material, settings, now=T0 + 1000 + 10 + 3600 + LEEWAY)
    assert retired[0] not in await states(db)


async def test_dry_run_changes_nothing(db: Database, settings: Settings, material: KeyMaterial) -> None:
    result = await rotation.rotate(db, material, settings, dry_run=True, now=T0)
    assert [s.action for s in result.done] == ["create-active"]
    assert await states(db) == {}


async def test_force_rotates_now_and_warns(db: Database, settings: Settings, material: KeyMaterial) -> None:
    a = (await rotation.rotate(db, material, settings, now=T0)).done[0].kid
    forced = await rotation.rotate(db, material, settings, force=True, now=T0 + 5)
    assert [s.action for s in forced.done] == ["create-active"] and forced.warnings
    assert (await states(db))[a] == "retired"
    # with a next key published, --force promotes it, warning when it was published too briefly
    await rotation.rotate(db, material, settings, now=T0 + 905)  # the forced key's schedule
    nxt = next(kid for kid, st in (await states(db)).items() if st == "next")
    early = await rotation.rotate(db, material, settings, force=True, now=T0 + 915)
    assert [(s.action, s.kid) for s in early.done] == [("promote", nxt)]
    assert "unknown kid" in early.warnings[0]


async def test_two_rotations_started_together_perform_the_step_once(
    settings: Settings, material: KeyMaterial
) -> None:
    """Each run has its own engine (as two cron jobs would); the lock makes the second see the first."""
    dbs = [Database(settings.database_url) for _ in range(4)]
    try:
        await rotation.rotate(dbs[0], material, settings, now=T0)
        results = await asyncio.gather(*(rotation.rotate(d, material, settings, now=T0 + 900) for d in dbs))
        assert sorted(len(r.done) for r in results) == [0, 0, 0, 1]
        assert sorted((await states(dbs[0])).values()) == ["active", "next"]
        results = await asyncio.gather(*(rotation.rotate(d, material, settings, now=T0 + 1000) for d in dbs))
        assert sorted(len(r.done) for r in results) == [0, 0, 0, 1]
        assert sorted((await states(dbs[0])).values()) == ["active", "retired"]
    finally:
        for d in dbs:
            await d.close()


async def test_the_database_itself_refuses_a_second_active_key(db: Database, material: KeyMaterial) -> None:
    ring = KeyRing(db, material, "ES256")
    await ring.ensure_active()
    with pytest.raises(IntegrityError, match=r"(?i)unique"):
        async with db.transaction() as conn:
            await conn.execute(
                text(
                    "INSERT INTO signing_keys (kid, alg, state, public_jwk, private_key, kek_id, created_at, "
                    "state_changed_at) VALUES ('x', 'ES256', 'active', '{}', :p, 'k', 0, 0)"
                ),
                {"p": b"x"},
            )


async def test_revoke_takes_the_key_out_now_and_a_fresh_one_signs(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    a = (await rotation.rotate(db, material, settings, now=T0)).done[0].kid
    ring = KeyRing(db, material, "ES256")
    await ring.reload()
    result = await rotation.revoke(db, material, settings, a, now=T0 + 1)
    assert result.previous_state == "active" and result.new_active and result.new_active != a
    assert await ring.reload()
    assert ring.signer.kid == result.new_active
    assert a not in ring.kids and a not in {k["kid"] for k in ring.jwks["keys"]}
    assert ring.is_revoked(a) and not ring.is_revoked(result.new_active)
    # and on the denylist, for introspection and every verifier's copy (kind "kid")
    from issuer.revocation.denylist import Denylist

    deny = Denylist(db, redis_url=None)
    try:
        claims = {"jti": "j", "sub": "s", "client_id": "c", "iat": T0, "exp": T0 + 300}
        assert await deny.is_revoked(claims, a)
        assert not await deny.is_revoked(claims, result.new_active)
    finally:
        await deny.close()
    async with db.transaction() as conn:
        wiped = (
            await conn.execute(text("SELECT private_key FROM signing_keys WHERE kid = :k"), {"k": a})
        ).scalar()
    assert not wiped  # nothing left to steal
    with pytest.raises(LookupError, match="already revoked"):
        await rotation.revoke(db, material, settings, a)
    with pytest.raises(LookupError, match="no signing key"):
        await rotation.revoke(db, material, settings, "unknown")
    # the revocation lasts as long as a token it signed could, then the row goes
    horizon = T0 + 1 + settings.key_reload_interval + settings.access_token_ttl + LEEWAY
    await rotation.rotate(db, material, settings, now=horizon - 1)
    assert (await states(db)).get(a) == "revoked"
    await rotation.rotate(db, material, settings, now=horizon)
    assert a not in await states(db)


async def test_revoking_the_active_key_promotes_the_published_next_key(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    await rotation.rotate(db, material, settings, now=T0)
    b = (await rotation.rotate(db, material, settings, now=T0 + 900)).done[0].kid
    a = next(k for k, s in (await states(db)).items() if s == "active")
    result = await rotation.revoke(db, material, settings, a, now=T0 + 901)
    assert result.new_active == b and (await states(db))[b] == "active"


async def test_changing_the_algorithm_rotates_through_the_same_steps(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    a = (await rotation.rotate(db, material, settings, now=T0)).done[0].kid
    rs = settings.replace(signing_alg="RS256")
    created = await rotation.rotate(db, material, rs, now=T0 + 10)
    assert [s.action for s in created.done] == ["create-next"]
    b = created.done[0].kid
    assert (await rotation.rotate(db, material, rs, now=T0 + 109)).done == []  # not published long enough
    assert [s.kid for s in (await rotation.rotate(db, material, rs, now=T0 + 110)).done] == [b]
    ring = KeyRing(db, material, "RS256")
    await ring.reload()
    assert ring.signer.alg == "RS256" and {k["alg"] for k in ring.jwks["keys"]} == {"ES256", "RS256"}
    assert (await states(db))[a] == "retired"


async def test_rotate_refuses_a_key_encryption_key_other_than_the_rings(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    await rotation.rotate(db, material, settings, now=T0)
    stranger = KeyMaterial(kek=secrets.token_bytes(32), hmac_key=material.hmac_key)
    with pytest.raises(KeyRingError, match="not the one that wrapped"):
        await rotation.rotate(db, stranger, settings, now=T0 + 900)
    assert len(await states(db)) == 1


async def test_rewrap_moves_every_key_to_the_new_kek(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    await rotation.rotate(db, material, settings, now=T0)
    await rotation.rotate(db, material, settings, now=T0 + 900)
    new_kek = secrets.token_bytes(32)
    assert await rotation.rewrap(db, material, new_kek) == 2
    with pytest.raises(KeyRingError, match="cannot be decrypted"):
        await KeyRing(db, material, "ES256").reload()  # the old KEK opens nothing any more
    ring = KeyRing(db, KeyMaterial(kek=new_kek, hmac_key=material.hmac_key), "ES256")
    await ring.reload()
    assert ring.signer.sign({"sub": "x"})
    assert await rotation.rewrap(db, material, new_kek) == 0  # a rerun finds nothing left to do
    with pytest.raises(KeyRingError, match="cannot be decrypted"):
        await rotation.rewrap(db, material, secrets.token_bytes(32))  # the old KEK opens nothing now
    await ring.reload()
    assert ring.signer.sign({"sub": "x"})  # and the failed attempt changed nothing


async def test_the_jwks_never_holds_private_members(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    for alg in ("ES256", "RS256", "EdDSA"):
        await rotation.rotate(db, material, settings.replace(signing_alg=alg), force=True, now=T0)
    ring = KeyRing(db, material, "EdDSA")
    await ring.reload()
    assert {k["alg"] for k in ring.jwks["keys"]} == {"ES256", "RS256", "EdDSA"}
    for jwk in json.loads(ring.jwks_body)["keys"]:
        assert not PRIVATE_MEMBERS & jwk.keys()


def _secrets_of(material: KeyMaterial, rows: list[tuple[str, str, bytes]]) -> list[bytes]:
    """Every encoding of each private key an attacker could use, to look for in a dump."""
    import base64

    found: list[bytes] = []
    for kid, alg, sealed in rows:
        key = unseal(material.kek, sealed, kid, alg)
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        found.append(der)
        found.append(der[-32:])  # the tail holds key bytes for EC and Ed25519
        from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

        algorithm = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}[alg]
        d = algorithm.to_jwk(key, as_dict=True)["d"]
        found.append(d.encode())
        found.append(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))
    return found


async def test_a_database_dump_holds_no_usable_private_key(
    database_url: str, db: Database, settings: Settings, material: KeyMaterial, tmp_path: Path
) -> None:
    for alg in ("ES256", "RS256", "EdDSA"):
        await rotation.rotate(db, material, settings.replace(signing_alg=alg), force=True, now=T0)
    async with db.transaction() as conn:
        rows = [
            tuple(r) for r in (await conn.execute(text("SELECT kid, alg, private_key FROM signing_keys")))
        ]
    assert len(rows) == 3
    needles = _secrets_of(material, rows)  # type: ignore[arg-type]
    if database_url.startswith("sqlite"):
        await db.close()
        path = Path(database_url.removeprefix("sqlite:///"))
        dump = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))  # file, WAL, shm
    else:
        dump = subprocess.run(
            ["pg_dump", "--format=plain", database_url], capture_output=True, check=True
        ).stdout
        # pg_dump writes bytea as hex: scan that rendering too
        needles += [n.hex().encode() for n in needles]
    sealed = [bytes(row[2]) for row in rows]
    if not database_url.startswith("sqlite"):
        sealed = [s.hex().encode() for s in sealed]
    assert all(s in dump for s in sealed)  # the dump does hold every key, sealed
    for needle in needles:
        assert needle not in dump
    assert b"PRIVATE KEY" not in dump


async def test_an_instance_never_signs_with_a_key_the_database_no_longer_calls_active(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    from issuer.errors import TemporarilyUnavailable

    await rotation.rotate(db, material, settings, now=T0)
    ring = KeyRing(db, material, "ES256")  # an instance still on the old key-encryption key
    await ring.reload()
    old = ring.signer.kid
    new_kek = KeyMaterial(kek=secrets.token_bytes(32), hmac_key=material.hmac_key)
    await rotation.rewrap(db, material, new_kek.kek)
    await rotation.rotate(db, new_kek, settings, force=True, now=T0 + 1)  # the old key is retired
    with pytest.raises(KeyRingError, match="cannot be decrypted"):
        await ring.reload()
    with pytest.raises(TemporarilyUnavailable):
        ring.signer  # noqa: B018  (503 for the token endpoint, not a token from the retired key)
    async with db.transaction() as conn:
        assert {k.kid: k.state for k in await KeyStore().load(conn)}[old] == "retired"


async def test_a_key_the_denylist_lists_never_signs_even_before_its_row_says_revoked(
    db: Database, settings: Settings, material: KeyMaterial
) -> None:
    """Point 8 of issue 14, in process: `issuer keys revoke` denylists the kid first and rewrites
    the ring second. An instance whose denylist copy has the entry stops signing with the key
    (the minter's set lookup) and leaves it out of the JWKS, whatever the row still says."""
    import time

    from issuer.errors import TemporarilyUnavailable
    from issuer.revocation.denylist import Denylist
    from issuer.tokens import AccessTokenMinter

    a = (await rotation.rotate(db, material, settings, now=T0)).done[0].kid
    deny = Denylist(db, redis_url=None, cache_refresh=0)  # this instance's copy
    operator = Denylist(db, redis_url=None)  # the CLI's, in another process
    ring = KeyRing(db, material, "ES256")
    ring.denied_kids = deny.kids
    minter = AccessTokenMinter(ring, "https://issuer.test", revoked_kids=deny.kids)
    appeared: list[str] = []
    deny.on_kid.append(appeared.append)
    try:
        await ring.reload()

        def mint() -> str:
            return minter.mint(subject="s", client_id="c", audience=("api",), scope="", ttl=60).token

        assert jwt_kid(mint()) == a
        now = int(time.time())
        await operator.add("kid", a, now, now + 600, reason="signing key revoked", actor="operator")
        await deny.ensure_available()  # the copy's refresh (every second in a server)
        assert appeared == [a] and a in deny.kids
        with pytest.raises(TemporarilyUnavailable):
            mint()  # the ring has not reloaded: still no signature by the revoked key
        with pytest.raises(TemporarilyUnavailable):
            await minter.ensure_can_sign()  # a refresh answers 503 before spending its token
        etag = ring.jwks_etag
        assert await ring.reload()  # the row still says active
        assert ring.active_denied and a not in ring.kids and ring.jwks["keys"] == []
        assert ring.jwks_etag != etag and ring.is_revoked(a)
        with pytest.raises(TemporarilyUnavailable):
            mint()
        result = await rotation.revoke(db, material, settings, a, denylist=operator)
        assert await ring.reload()
        assert not ring.active_denied and jwt_kid(mint()) == result.new_active != a
        assert [k["kid"] for k in ring.jwks["keys"]] == [result.new_active]
    finally:
        await deny.close()
        await operator.close()


def jwt_kid(token: str) -> str:
    import jwt

    return str(jwt.get_unverified_header(token)["kid"])
