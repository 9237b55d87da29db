"""The rotation planner: from the ring's keys, the schedule and the time, what is due and what comes next.

Pure: no I/O, no clock of its own. :mod:`issuer.keys.rotation` reads the ring, asks :func:`plan`
(or :func:`forced`) and performs the steps.

A key lives ``next`` (published, not signing) -> ``active`` (signing; one at a time) ->
``retired`` (published until every token it signed has expired) -> deleted; a compromised key
goes ``revoked`` at once and is deleted once the last token it could have signed has expired
(DESIGN.md, Keys).

The promise behind the schedule: a verifier that caches the JWKS for its ``max-age`` never
meets an unknown ``kid``. An instance sees a new ``next`` key within the reload interval (at
once with Redis), and a verifier may keep a JWKS fetched just before that for max-age more
seconds, so a ``next`` key may activate only after it has been in the database for longer than
max-age + reload interval (:attr:`Schedule.min_published`). A retired key may go only after
the longest access-token lifetime, the reload interval (an instance may sign with it until it
reloads) and :data:`LEEWAY` have passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from issuer.settings import Settings, jwks_max_age

__all__ = ["LEEWAY", "STATES", "KeyInfo", "Schedule", "Step", "forced", "plan"]

#: Seconds added to the longest access-token lifetime before a retired key is dropped: the
#: clock skew verifiers allow (``issuer_verify`` and PyJWT's ``leeway``) and more.
LEEWAY = 60
STATES = ("next", "active", "retired", "revoked")


@dataclass(frozen=True, slots=True)
class Schedule:
    """The timings of the ring, from settings; every duration in seconds."""

    alg: str
    rotation_interval: int
    publish_ahead: int
    reload_interval: int
    jwks_max_age: int
    access_token_ttl: int  # the longest lifetime a token may have (issuer.keys.rotation.max_token_ttl)

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
    """A key of the ring as the planner sees it: its state and dates, no key material."""

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


def forced(
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
