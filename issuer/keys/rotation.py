"""The key ring's transitions: each step of a rotation, revocation and re-wrapping, and the status.

The steps come from the pure planner (:mod:`issuer.keys.plan`: the key states, the schedule and
the promise behind it); this module performs them through :class:`~issuer.store.keys.KeyStore`
and then announces the change (:mod:`issuer.keys.announce`).

Every operation is a plain async function over :class:`~issuer.store.database.Database` that
knows nothing of HTTP. Each changes the ring in one transaction that first takes the ring's lock
(:meth:`~issuer.store.keys.KeyStore.lock`: ``pg_advisory_xact_lock`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) and then reads the ring again, so two rotations started at the
same moment perform a step once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.keys.announce import announce
from issuer.keys.material import KeyMaterial, kek_id
from issuer.keys.plan import STATES, KeyInfo, Schedule, Step, forced, plan
from issuer.keys.ring import KeyRingError, generate_key, seal, store_key, unseal
from issuer.revocation.denylist import Denylist
from issuer.settings import Settings
from issuer.store.audit import AuditStore
from issuer.store.clients import ClientStore
from issuer.store.database import Database
from issuer.store.keys import KeyStore

__all__ = [
    "RevokeResult",
    "RotationResult",
    "max_token_ttl",
    "revoke",
    "rewrap",
    "rotate",
    "status",
]

KEYS = KeyStore()  # stateless: one for every operation


@dataclass(slots=True)
class RotationResult:
    done: list[Step] = field(default_factory=list)
    pending: list[Step] = field(default_factory=list)  # what is scheduled next, with due times
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RevokeResult:
    kid: str
    previous_state: str
    new_active: str | None  # the key that signs from now on, when the revoked one was active
    warnings: tuple[str, ...]


async def max_token_ttl(conn: AsyncConnection, settings: Settings) -> int:
    """The longest access-token lifetime in force: the default, or a client's own."""
    longest = await ClientStore().longest_access_token_ttl(conn)
    return max(settings.access_token_ttl, longest or 0)


async def _insert(conn: AsyncConnection, material: KeyMaterial, alg: str, state: str, now: int) -> str:
    key = await asyncio.to_thread(generate_key, material, alg)  # RSA takes ~100 ms
    await store_key(KEYS, conn, key, material, state, now)
    return key.kid


async def _promote(conn: AsyncConnection, kid: str, now: int) -> None:
    await KEYS.retire_active(conn, now)
    if not await KEYS.activate(conn, kid, now):
        raise KeyRingError(f"key {kid} is no longer a next key")


def _check_kek(keys: Sequence[KeyInfo], material: KeyMaterial) -> None:
    """Refuse to add keys wrapped under another key-encryption key than the ring's."""
    ring = {k.kek_id for k in keys if k.state in ("next", "active", "retired")}
    if ring and material.kek_id not in ring:
        raise KeyRingError(
            f"the key-encryption key in use here (id {material.kek_id}) is not the one that wrapped the "
            f"ring (id {', '.join(sorted(ring))}): set ISSUER_KEY_ENCRYPTION_KEY or ISSUER_KEYS_DIR as the "
            "server has them"
        )


async def rotate(
    db: Database,
    material: KeyMaterial,
    settings: Settings,
    *,
    force: bool = False,
    dry_run: bool = False,
    now: int | None = None,
    audit: AuditStore | None = None,
) -> RotationResult:
    """Perform every step that is due, and nothing else. ``force``: rotate now (an emergency)."""
    result = RotationResult()
    async with db.transaction() as conn:
        await KEYS.lock(conn)
        now = int(time.time()) if now is None else now
        schedule = Schedule.from_settings(settings, await max_token_ttl(conn, settings))
        keys = await KEYS.load(conn)
        due, pending = plan(keys, schedule, now)
        if force:
            due, pending = forced(keys, schedule, now, due, pending, result.warnings)
        if not dry_run and any(s.action in ("promote", "create-active", "create-next") for s in due):
            _check_kek(keys, material)
        result.pending = pending
        if dry_run:
            result.done = due
            return result
        for step in due:
            if step.action in ("discard", "remove"):
                assert step.kid is not None
                await KEYS.delete(conn, step.kid)
                done = step
            elif step.action == "create-next":
                done = Step(
                    step.action, await _insert(conn, material, schedule.alg, "next", now), now, step.reason
                )
            elif step.action == "create-active":
                await KEYS.retire_active(conn, now)
                done = Step(
                    step.action, await _insert(conn, material, schedule.alg, "active", now), now, step.reason
                )
            else:
                assert step.kid is not None
                await _promote(conn, step.kid, now)
                done = step
            result.done.append(done)
            await (audit or AuditStore()).record(
                conn, at=now, event=f"key.{done.action}", kid=done.kid, forced=force, reason=done.reason
            )
    if result.done:
        await announce(settings, "rotated")
    return result


async def revoke(
    db: Database,
    material: KeyMaterial,
    settings: Settings,
    kid: str,
    *,
    now: int | None = None,
    audit: AuditStore | None = None,
    denylist: Denylist | None = None,
) -> RevokeResult:
    """Emergency: ``kid`` leaves the JWKS now and is rejected until its tokens have expired.

    First the ``kid`` goes on the denylist (kind ``kid``: introspection, ``issuer_verify`` and its
    Redis/feed mirrors reject every token signed with it), then, in one transaction, the key
    becomes ``revoked`` and its ciphertext is wiped; when it was the active key, the ``next`` key
    (if any) or a fresh one becomes active. Denylisting first fails closed: if the second step
    fails, the operator reruns it. ``KeyRing.revoked_kids`` also rejects the kid in-process.
    """
    warnings: list[str] = []
    new_active: str | None = None
    now = int(time.time()) if now is None else now
    async with db.transaction() as conn:
        known = await KEYS.state_of(conn, kid)
        ttl = await max_token_ttl(conn, settings)
    if known is None:
        raise LookupError(f"no signing key with kid {kid!r}")
    owned = denylist is None
    deny = denylist or Denylist(
        db,
        redis_url=settings.redis_url,
        prefix=settings.redis_prefix,
        leeway=settings.denylist_leeway,
        default_ttl=settings.access_token_ttl,
    )
    try:
        # an instance may sign with it until it reloads; its last token lives ttl after that
        await deny.add(
            "kid",
            kid,
            now,
            now + settings.key_reload_interval + ttl,
            reason="signing key revoked",
            actor="operator",
        )
    finally:
        if owned:
            await deny.close()
    async with db.transaction() as conn:
        await KEYS.lock(conn)
        keys = {k.kid: k for k in await KEYS.load(conn)}
        key = keys.get(kid)
        if key is None:
            raise LookupError(f"no signing key with kid {kid!r}")
        if key.state == "revoked":
            raise LookupError(f"key {kid} is already revoked")
        await KEYS.revoke(conn, kid, now)
        if key.state == "active":
            successor = [k for k in keys.values() if k.state == "next" and k.alg == settings.signing_alg]
            if successor:
                new_active = successor[-1].kid
                await KEYS.activate(conn, new_active, now)
            else:
                _check_kek(list(keys.values()), material)
                new_active = await _insert(conn, material, settings.signing_alg, "active", now)
            warnings.append(
                f"key {new_active} signs from now on; verifiers whose cached JWKS predates it see an "
                "unknown kid until they refetch (issuer_verify and PyJWKClient refetch on an unknown kid)"
            )
        await (audit or AuditStore()).record(
            conn, at=now, event="key.revoked", kid=kid, previous_state=key.state, new_active=new_active
        )
    await announce(settings, "revoked")
    return RevokeResult(kid, key.state, new_active, tuple(warnings))


async def rewrap(db: Database, material: KeyMaterial, new_kek: bytes, *, now: int | None = None) -> int:
    """Re-encrypt every private key under ``new_kek``, all or nothing; returns how many."""
    if len(new_kek) != 32:
        raise KeyRingError("the new key-encryption key must be 32 bytes")
    if new_kek == material.kek:
        raise KeyRingError("the new key-encryption key is the one in use")
    new = KeyMaterial(kek=new_kek, hmac_key=material.hmac_key)
    count = 0
    async with db.transaction() as conn:
        await KEYS.lock(conn)
        rows = await KEYS.sealed(conn)
        for row in rows:
            if not row.private_key:
                continue  # revoked: nothing left to wrap
            if row.kek_id == new.kek_id:
                continue  # already under the new key (a rerun after a partial rollout)
            private = unseal(material.kek, row.private_key, row.kid, row.alg)
            await KEYS.reseal(conn, row.kid, seal(new, private, row.kid, row.alg), new.kek_id)
            count += 1
        await AuditStore().record(
            conn,
            at=int(time.time()) if now is None else now,
            event="key.rewrapped",
            count=count,
            kek_id=kek_id(new_kek),
        )
    return count


# ---------------------------------------------------------------- status


async def status(db: Database, settings: Settings, *, now: int | None = None) -> dict[str, Any]:
    """Every key with its state, since when, and its next transition; the JWKS max-age."""
    async with db.transaction() as conn:
        now = int(time.time()) if now is None else now
        schedule = Schedule.from_settings(settings, await max_token_ttl(conn, settings))
        keys = await KEYS.load(conn)
    due, pending = plan(keys, schedule, now)
    transitions: dict[str, tuple[str, int]] = {}
    for step in [*due, *pending]:
        if step.action == "promote" and step.kid:
            transitions[step.kid] = ("active", step.due_at)
            for key in keys:
                if key.state == "active":
                    transitions[key.kid] = ("retired", step.due_at)
        elif step.action == "create-next":
            for key in keys:
                if key.state == "active":
                    # a next key is created then, and replaces this one publish-ahead later
                    transitions[key.kid] = ("retired", max(step.due_at, now) + schedule.publish_ahead)
        elif step.action in ("remove", "discard") and step.kid:
            transitions[step.kid] = ("removed", step.due_at)
    return {
        "now": now,
        "algorithm": schedule.alg,
        "jwks_max_age": schedule.jwks_max_age,
        "rotation_interval": schedule.rotation_interval,
        "publish_ahead": schedule.publish_ahead,
        "reload_interval": schedule.reload_interval,
        "due": [step.describe() for step in due],
        "keys": [
            {
                "kid": key.kid,
                "alg": key.alg,
                "state": key.state,
                "since": key.state_changed_at,
                "next": transitions[key.kid][0] if key.kid in transitions else None,
                "next_at": transitions[key.kid][1] if key.kid in transitions else None,
            }
            for key in sorted(keys, key=lambda k: (STATES.index(k.state) if k.state in STATES else 9, k.kid))
        ],
    }
