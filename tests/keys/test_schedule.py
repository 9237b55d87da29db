"""The schedule: settings validated against each other, the JWKS max-age, and which step is due when."""

from __future__ import annotations

import pytest

from issuer.keys.plan import LEEWAY, KeyInfo, Schedule, plan
from issuer.settings import SettingsError, jwks_max_age, load

SCHEDULE = Schedule(
    alg="ES256",
    rotation_interval=1000,
    publish_ahead=100,
    reload_interval=10,
    jwks_max_age=45,
    access_token_ttl=300,
)


def key(kid: str, state: str, at: int, alg: str = "ES256") -> KeyInfo:
    return KeyInfo(
        kid=kid,
        alg=alg,
        state=state,
        kek_id="k",
        created_at=at,
        state_changed_at=at,
        activated_at=at if state == "active" else None,
        retired_at=at if state in ("retired", "revoked") else None,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISSUER_KEY_PUBLISH_AHEAD": "11", "ISSUER_KEY_RELOAD_INTERVAL": "10"}, "must exceed"),
        ({"ISSUER_KEY_PUBLISH_AHEAD": "100", "ISSUER_KEY_ROTATION_INTERVAL": "100"}, "must be shorter"),
        ({"ISSUER_KEY_ROTATION_INTERVAL": "soon"}, "not an integer"),
        ({"ISSUER_KEY_PUBLISH_AHEAD": "0"}, "out of range"),
        ({"ISSUER_REDIS_PREFIX": " "}, "empty"),
    ],
    ids=["max-age must fit in publish-ahead", "publish-ahead inside rotation", "integer", "range", "prefix"],
)
def test_contradicting_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(env)


def test_max_age_plus_reload_fits_inside_publish_ahead() -> None:
    for publish_ahead, reload in [(3, 1), (12, 10), (86400, 10), (100, 7), (7201, 1)]:
        settings = load(
            {"ISSUER_KEY_PUBLISH_AHEAD": str(publish_ahead), "ISSUER_KEY_RELOAD_INTERVAL": str(reload)}
        )
        age = jwks_max_age(settings)
        assert 1 <= age <= 3600
        assert age + reload < publish_ahead
    assert jwks_max_age(load({})) == 3600  # defaults: a day ahead, capped at an hour


def test_an_empty_ring_gets_an_active_key_at_once() -> None:
    due, _ = plan([], SCHEDULE, 5000)
    assert [(s.action, s.due_at) for s in due] == [("create-active", 5000)]


def test_a_next_key_is_created_publish_ahead_before_the_rotation() -> None:
    ring = [key("a", "active", 1000)]
    due, pending = plan(ring, SCHEDULE, 1000 + 899)
    assert due == [] and pending[0].action == "create-next" and pending[0].due_at == 1900
    due, _ = plan(ring, SCHEDULE, 1900)
    assert [s.action for s in due] == ["create-next"]


def test_promotion_waits_for_the_schedule_and_never_beats_max_age_plus_reload() -> None:
    ring = [key("a", "active", 1000), key("b", "next", 1900)]
    due, pending = plan(ring, SCHEDULE, 1999)
    assert due == [] and (pending[0].action, pending[0].kid, pending[0].due_at) == ("promote", "b", 2000)
    assert [s.kid for s in plan(ring, SCHEDULE, 2000)[0]] == ["b"]
    # a next key created late (cron was down): it still waits until it has been published long enough
    late = [key("a", "active", 1000), key("b", "next", 5000)]
    assert plan(late, SCHEDULE, 5000 + SCHEDULE.publish_ahead - 1)[0] == []
    assert plan(late, SCHEDULE, 5000 + SCHEDULE.publish_ahead)[0][0].kid == "b"


def test_a_retired_key_stays_until_its_last_token_expired() -> None:
    ring = [key("b", "active", 2000), key("a", "retired", 2000)]
    horizon = 2000 + SCHEDULE.reload_interval + SCHEDULE.access_token_ttl + LEEWAY
    assert all(s.kid != "a" for s in plan(ring, SCHEDULE, horizon - 1)[0])
    assert [(s.action, s.kid) for s in plan(ring, SCHEDULE, horizon)[0]] == [("remove", "a")]


def test_changing_the_algorithm_publishes_a_key_of_the_new_one_at_once() -> None:
    ring = [key("a", "active", 1000, alg="RS256")]
    due, _ = plan(ring, SCHEDULE, 1001)
    assert [s.action for s in due] == ["create-next"]
    # then it is promoted once published for publish-ahead, not at the old key's rotation time
    ring.append(key("b", "next", 1001))
    assert plan(ring, SCHEDULE, 1100)[0] == []
    assert [s.kid for s in plan(ring, SCHEDULE, 1101)[0]] == ["b"]
    # a next key of an abandoned algorithm never signed: it is discarded
    stale = [key("a", "active", 1000), key("x", "next", 1500, alg="EdDSA")]
    assert ("discard", "x") in [(s.action, s.kid) for s in plan(stale, SCHEDULE, 1500)[0]]
