"""The key ring's lifecycle: the schedule, each step of a rotation, revocation and re-wrapping.

A key lives ``next`` (published, not signing) -> ``active`` (signing; one at a time) ->
``retired`` (published until every token it signed has expired) -> deleted; a compromised key
goes ``revoked`` at once: out of the JWKS, its ``kid`` rejected by introspection and
``issuer_verify`` until the last token it could have signed has expired (DESIGN.md, Keys).

The promise behind the schedule: a verifier that caches the JWKS for its ``max-age`` never
meets an unknown ``kid``. An instance sees a new ``next`` key within the reload interval (at
once with Redis), and a verifier may keep a JWKS fetched just before that for max-age more
seconds, so a ``next`` key may activate only after it has been in the database for longer than
max-age + reload interval (:attr:`Schedule.min_published`). A retired key may go only after
the longest access-token lifetime, the reload interval (an instance may sign with it until it
reloads) and :data:`LEEWAY` have passed.

Every operation is a plain async function over :class:`~issuer.store.database.Database` that
knows nothing of HTTP. Each changes the ring in one transaction that first takes a lock
(``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and then reads the ring
again, so two rotations started at the same moment perform a step once. After a change,
:func:`announce` publishes on the Redis channel ``<prefix>keys``; :func:`watch` is the
instances' side of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.errors import TemporarilyUnavailable
from issuer.keys.material import KeyMaterial, kek_id
from issuer.keys.ring import KeyRing, KeyRingError, generate_key, key_row, seal, unseal
from issuer.revocation.denylist import Denylist
from issuer.settings import Settings, jwks_max_age
from issuer.store.audit import AuditStore
from issuer.store.database import Database
from issuer.store.tables import Client, SigningKey

__all__ = [
    "LEEWAY",
    "KeyInfo",
    "RevokeResult",
    "RotationResult",
    "Schedule",
    "Step",
    "announce",
    "channel",
    "load_keys",
    "plan",
    "revoke",
    "rewrap",
    "rotate",
    "status",
    "watch",
]

log = logging.getLogger("issuer.keys")

#: Seconds added to the longest access-token lifetime before a retired key is dropped: the
#: clock skew verifiers allow (``issuer_verify`` and PyJWT's ``leeway``) and more.
LEEWAY = 60
#: ``pg_advisory_xact_lock`` key of the key ring (any constant; "KEYRING" in ASCII).
_PG_LOCK = 0x4B4559_52494E47

T = SigningKey.__table__  # type: ignore[attr-defined]
C = Client.__table__  # type: ignore[attr-defined]
STATES = ("next", "active", "retired", "revoked")


@dataclass(frozen=True, slots=True)
class Schedule:
    """The timings of the ring, from settings; every duration in seconds."""

    alg: str
    rotation_interval: int
    publish_ahead: int
    reload_interval: int
    jwks_max_age: int
    access_token_ttl: int  # the longest lifetime a token may have been given (see max_token_ttl)

    @classmethod
    def from_settings(cls, settings: Settings, access_token_ttl: int | None = None) -> Schedule:
        return cls(
            alg=settings.signing_alg,
            rotation_interval=settings.key_rotation_interval,
            publish_ahead=settings.key_publish_ahead,
            reload_interval=settings.key_reload_interval,
            jwks_max_age=jwks_max_age(settings),
            access_token_ttl=access_token_ttl or settings.access_token_ttl,
        )

    @property
    def min_published(self) -> int:
        """A ``next`` key may sign once it has been in the database for longer than this."""
        return self.jwks_max_age + self.reload_interval

    @property
    def token_horizon(self) -> int:
        """After retirement (or revocation), the last token a key signed is dead this much later."""
        return self.reload_interval + self.access_token_ttl + LEEWAY


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    alg: str
    state: str
    kek_id: str
    created_at: int
    state_changed_at: int
    activated_at: int | None
    retired_at: int | None


@dataclass(frozen=True, slots=True)
class Step:
    """One change of the ring. ``action``: create-next, promote, create-active, discard, remove."""

    action: str
    kid: str | None
    due_at: int
    reason: str

    def describe(self) -> str:
        key = f" {self.kid}" if self.kid else ""
        return f"{self.action}{key}: {self.reason}"


@dataclass(slots=True)
class RotationResult:
    done: list[Step] = field(default_factory=list)
    pending: list[Step] = field(default_factory=list)  # what is scheduled next, with due times
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class RevokeResult:
    kid: str
    previous_state: str
    new_active: str | None  # the key that signs from now on, when the revoked one was active
    warnings: tuple[str, ...]


# ---------------------------------------------------------------- reading


async def load_keys(conn: AsyncConnection) -> list[KeyInfo]:
    rows = (
        await conn.execute(
            select(
                T.c.kid,
                T.c.alg,
                T.c.state,
                T.c.kek_id,
                T.c.created_at,
                T.c.state_changed_at,
                T.c.activated_at,
                T.c.retired_at,
            ).order_by(T.c.created_at, T.c.kid)
        )
    ).all()
    return [KeyInfo(**row._asdict()) for row in rows]


async def max_token_ttl(conn: AsyncConnection, settings: Settings) -> int:
    """The longest access-token lifetime in force: the default, or a client's own."""
    longest = (await conn.execute(select(func.max(C.c.access_token_ttl)))).scalar()
    return max(settings.access_token_ttl, int(longest or 0))


async def _lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK)))
    # SQLite: the transaction began with BEGIN IMMEDIATE (issuer.store.database): writers queue.


# ---------------------------------------------------------------- the plan


def plan(keys: Sequence[KeyInfo], schedule: Schedule, now: int) -> tuple[list[Step], list[Step]]:
    """What is due at ``now`` and what is scheduled later: ``(due, pending)``. Pure."""
    steps: list[Step] = []
    active = [k for k in keys if k.state == "active"]
    nexts = [k for k in keys if k.state == "next"]
    current = active[0] if active else None
    usable = [k for k in nexts if k.alg == schedule.alg]
    for key in nexts:
        if key.alg != schedule.alg:
            steps.append(
                Step("discard", key.kid, now, f"next key is {key.alg}, ISSUER_SIGNING_ALG is {schedule.alg}")
            )
    candidate = usable[-1] if usable else None
    for key in usable[:-1]:
        steps.append(Step("discard", key.kid, now, "a newer next key exists"))
    alg_change = current is not None and current.alg != schedule.alg
    if current is None:
        if candidate is not None:
            steps.append(Step("promote", candidate.kid, now, "no key is active"))
        else:
            steps.append(Step("create-active", None, now, "no key is active"))
    elif candidate is None:
        due = now if alg_change else (current.activated_at or current.state_changed_at)
        if not alg_change:
            due += schedule.rotation_interval - schedule.publish_ahead
        reason = (
            f"algorithm changes from {current.alg} to {schedule.alg}"
            if alg_change
            else f"active key {current.kid} is due for replacement"
        )
        steps.append(Step("create-next", None, due, reason))
    else:
        due = candidate.state_changed_at + schedule.publish_ahead
        if not alg_change:
            due = max(due, (current.activated_at or current.state_changed_at) + schedule.rotation_interval)
        # Never earlier than the promise allows (published for longer than max-age + reload).
        due = max(due, candidate.state_changed_at + schedule.min_published + 1)
        steps.append(
            Step(
                "promote", candidate.kid, due, f"retires {current.kid}" + (" (algorithm change)" * alg_change)
            )
        )
    for key in keys:
        if key.state in ("retired", "revoked"):
            since = key.retired_at if key.state == "retired" and key.retired_at else key.state_changed_at
            what = "every token it signed has expired" if key.state == "retired" else "revocation has lapsed"
            steps.append(Step("remove", key.kid, since + schedule.token_horizon, what))
    due_now = [s for s in steps if s.due_at <= now]
    later = sorted((s for s in steps if s.due_at > now), key=lambda s: s.due_at)
    return due_now, later


# ---------------------------------------------------------------- changing the ring


async def _insert(conn: AsyncConnection, material: KeyMaterial, alg: str, state: str, now: int) -> str:
    key = await asyncio.to_thread(generate_key, material, alg)  # RSA takes ~100 ms
    await conn.execute(insert(T).values(**key_row(key, material, state, now)))
    return key.kid


async def _promote(conn: AsyncConnection, kid: str, now: int) -> None:
    await conn.execute(
        update(T).where(T.c.state == "active").values(state="retired", retired_at=now, state_changed_at=now)
    )
    result = await conn.execute(
        update(T)
        .where(T.c.kid == kid, T.c.state == "next")
        .values(state="active", activated_at=now, state_changed_at=now)
    )
    if result.rowcount != 1:
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
    result = RotationResult(dry_run=dry_run)
    async with db.transaction() as conn:
        await _lock(conn)
        now = int(time.time()) if now is None else now
        schedule = Schedule.from_settings(settings, await max_token_ttl(conn, settings))
        keys = await load_keys(conn)
        due, pending = plan(keys, schedule, now)
        if force:
            due, pending = _forced(keys, schedule, now, due, pending, result.warnings)
        if not dry_run and any(s.action in ("promote", "create-active", "create-next") for s in due):
            _check_kek(keys, material)
        result.pending = pending
        if dry_run:
            result.done = due
            return result
        for step in due:
            if step.action in ("discard", "remove"):
                await conn.execute(delete(T).where(T.c.kid == step.kid))
                done = step
            elif step.action == "create-next":
                done = Step(
                    step.action, await _insert(conn, material, schedule.alg, "next", now), now, step.reason
                )
            elif step.action == "create-active":
                await conn.execute(
                    update(T)
                    .where(T.c.state == "active")
                    .values(state="retired", retired_at=now, state_changed_at=now)
                )
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


def _forced(
    keys: Sequence[KeyInfo],
    schedule: Schedule,
    now: int,
    due: list[Step],
    pending: list[Step],
    warnings: list[str],
) -> tuple[list[Step], list[Step]]:
    """``--force``: whatever else is due, plus a new active key now."""
    if any(s.action in ("promote", "create-active") for s in due):
        return due, pending  # a rotation is due anyway: nothing to force
    promote = [s for s in pending if s.action == "promote"]
    later = [s for s in pending if s.action not in ("promote", "create-next")]
    due = [s for s in due if s.action != "create-next"]  # the forced key replaces the scheduled one
    if promote:
        step = promote[0]
        key = next(k for k in keys if k.kid == step.kid)
        published = now - key.state_changed_at
        if published <= schedule.min_published:
            warnings.append(
                f"key {step.kid} has been published for {published} s, less than the JWKS max-age plus "
                f"reload interval ({schedule.min_published} s): verifiers that fetched the JWKS before "
                f"it appeared, up to {schedule.min_published} s ago, see an unknown kid until they "
                "refetch (issuer_verify and PyJWKClient refetch on an unknown kid)"
            )
        return [*due, Step("promote", step.kid, now, "forced by the operator")], later
    warnings.append(
        "a brand-new key signs from now on: every verifier whose cached JWKS predates it (up to "
        f"{schedule.min_published} s) sees an unknown kid until it refetches (issuer_verify and "
        "PyJWKClient refetch on an unknown kid)"
    )
    return [*due, Step("create-active", None, now, "forced by the operator")], later


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
        known = (await conn.execute(select(T.c.state).where(T.c.kid == kid))).scalar()
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
        await _lock(conn)
        keys = {k.kid: k for k in await load_keys(conn)}
        key = keys.get(kid)
        if key is None:
            raise LookupError(f"no signing key with kid {kid!r}")
        if key.state == "revoked":
            raise LookupError(f"key {kid} is already revoked")
        await conn.execute(
            update(T)
            .where(T.c.kid == kid)
            .values(state="revoked", state_changed_at=now, retired_at=now, private_key=b"")
        )
        if key.state == "active":
            successor = [k for k in keys.values() if k.state == "next" and k.alg == settings.signing_alg]
            if successor:
                new_active = successor[-1].kid
                await conn.execute(
                    update(T)
                    .where(T.c.kid == new_active)
                    .values(state="active", activated_at=now, state_changed_at=now)
                )
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
        await _lock(conn)
        rows = (await conn.execute(select(T.c.kid, T.c.alg, T.c.private_key, T.c.kek_id))).all()
        for row in rows:
            if not row.private_key:
                continue  # revoked: nothing left to wrap
            if row.kek_id == new.kek_id:
                continue  # already under the new key (a rerun after a partial rollout)
            private = unseal(material.kek, row.private_key, row.kid, row.alg)
            await conn.execute(
                update(T)
                .where(T.c.kid == row.kid)
                .values(private_key=seal(new, private, row.kid, row.alg), kek_id=new.kek_id)
            )
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
        keys = await load_keys(conn)
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


# ---------------------------------------------------------------- telling the instances


def channel(settings: Settings) -> str:
    return f"{settings.redis_prefix}keys"


async def announce(settings: Settings, event: str) -> bool:
    """Publish a key-ring change on ``<prefix>keys``; False (and a warning) when Redis is down.

    Without Redis, or when the message is lost, instances still reload within
    ``ISSUER_KEY_RELOAD_INTERVAL``.
    """
    if not settings.redis_url:
        return False
    from redis.exceptions import RedisError

    from issuer import redis_conn

    client = redis_conn.async_client(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.publish(channel(settings), json.dumps({"event": event, "at": int(time.time())}))
        return True
    except (RedisError, OSError) as error:
        log.warning("key change not announced on Redis: %s", type(error).__name__)
        return False
    finally:
        await client.aclose()


async def watch(settings: Settings, keyring: KeyRing) -> None:
    """Reload ``keyring`` whenever a change is announced on Redis; reconnect when Redis goes away."""
    from redis.exceptions import RedisError

    from issuer import redis_conn

    assert settings.redis_url
    delay = 0.5
    while True:
        client = redis_conn.async_client(settings.redis_url, socket_connect_timeout=3)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel(settings))
            await keyring.reload()  # anything announced while we were not listening
            delay = 0.5
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is not None and await keyring.reload():
                    log.info("key ring reloaded on announcement", extra={"kids": keyring.kids})
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, KeyRingError, TemporarilyUnavailable) as error:
            log.warning("key change channel unavailable (%s); retrying", type(error).__name__)
        except Exception:
            log.exception("key ring reload failed")
        finally:
            with _suppress():
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with _suppress():
                await client.aclose()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def _suppress() -> Any:
    import contextlib

    return contextlib.suppress(Exception)
