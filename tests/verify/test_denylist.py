"""The verifier's local denylist copy: the issuer's wire format and matching rules, fed from real
Redis (keys + channel) or the issuer's HTTP feed; revocations on a running issuer reach it within
a second; it recovers after its Redis connection is killed or Redis restarts; it fails closed
when stale."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from issuer_verify import InvalidToken, Verifier
from issuer_verify.denylist import Denylist, FeedDenylist, RedisDenylist
from issuer_verify.wire import parse_entry
from tests import support
from tests.verify.support import Issuer, register_client

NOW = int(time.time())  # refreshed before every test (the suite can run longer than an entry lives)
DAY = 86400


@pytest.fixture(autouse=True)
def _fresh_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "NOW", int(time.time()))


def entry(kind: str, value: str, at: int | None = None, exp: int | None = None) -> dict[str, Any]:
    # Table rows are built at collection time: their entries live a day so that they are
    # still in force when the row runs; rows built inside a test use the fresh NOW.
    at = NOW if at is None else at
    return {"kind": kind, "value": value, "at": at, "exp": at + DAY if exp is None else exp}


def claims(**changes: Any) -> dict[str, Any]:
    base = {"jti": "j1", "sub": "usr_1", "client_id": "cli_1", "iat": NOW - 10, "sid": "sid_1"}
    base.update(changes)
    return base


def write(r: redis.Redis, prefix: str, item: dict[str, Any], *, publish: bool = True) -> None:
    raw = json.dumps(item)
    r.set(f"{prefix}deny:{item['kind']}:{item['value']}", raw, ex=600)
    if publish:
        r.publish(f"{prefix}denylist", raw)


def wait_until(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# ---------------------------------------------------------------- matching (in memory)


@pytest.mark.parametrize(
    ("item", "token", "kid", "expected"),
    [
        (entry("jti", "j1"), claims(), "k", "revoked"),
        (entry("jti", "j1"), claims(jti="j2"), "k", None),
        (entry("sid", "sid_1"), claims(), "k", "revoked"),
        (entry("sid", "sid_1"), claims(sid=None), "k", None),
        (entry("kid", "k"), claims(), "k", "revoked"),
        (entry("kid", "k"), claims(), "other", None),
        (entry("sub", "usr_1", at=NOW), claims(iat=NOW - 1), "k", "revoked"),
        (entry("sub", "usr_1", at=NOW), claims(iat=NOW), "k", "revoked"),
        (entry("sub", "usr_1", at=NOW), claims(iat=NOW + 1), "k", None),
        (entry("sub", "usr_2", at=NOW), claims(), "k", None),
        (entry("client", "cli_1", at=NOW), claims(iat=NOW), "k", "revoked"),
        (entry("client", "cli_1", at=NOW), claims(iat=NOW + 1), "k", None),
        (entry("client", "usr_1", at=NOW), claims(), "k", None),  # kinds never cross
        (entry("jti", "j1", exp=NOW - 1), claims(), "k", None),  # past its exp: forgotten
    ],
)
def test_matching_follows_the_wire_format(
    item: dict[str, Any], token: dict[str, Any], kid: str, expected: str | None
) -> None:
    copy = Denylist(max_staleness=None)
    copy.merge([item])
    assert copy.check(kid, {k: v for k, v in token.items() if v is not None}) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        {"kind": "user", "value": "x", "at": 1, "exp": 2},
        {"kind": "jti", "value": "", "at": 1, "exp": 2},
        {"kind": "jti", "value": "x", "at": "1", "exp": 2},
        {"kind": "jti", "value": "x", "at": 1, "exp": True},
        {"kind": "jti", "value": 5, "at": 1, "exp": 2},
        ["jti", "x", 1, 2],
    ],
)
def test_malformed_entries_are_refused_and_lose_nothing(raw: Any) -> None:
    assert parse_entry(raw) is None
    copy = Denylist(max_staleness=None)
    copy.merge([entry("jti", "kept")])
    assert copy.merge([raw]) == 0
    assert copy.check("k", claims(jti="kept")) == "revoked"


def test_a_later_subject_entry_moves_the_cutoff_forward_never_back() -> None:
    copy = Denylist(max_staleness=None)
    copy.merge([entry("sub", "usr_1", at=NOW)])
    copy.merge([entry("sub", "usr_1", at=NOW - 100)])
    assert copy.check("k", claims(iat=NOW)) == "revoked"


def test_a_copy_never_confirmed_fails_closed_unless_told_to_fail_open() -> None:
    assert Denylist(max_staleness=5).check("k", claims()) == "denylist_stale"
    assert Denylist(max_staleness=5, fail_open=True).check("k", claims()) is None


# ---------------------------------------------------------------- fed by real Redis


@pytest.fixture
def copy(redis_prefix: str) -> Iterator[RedisDenylist]:
    """A copy of the denylist under this test's prefix; the test starts it (after any set-up writes)."""
    feed = RedisDenylist(
        support.REDIS_URL, prefix=redis_prefix, client_name=f"issuer-verify-test-{secrets.token_hex(4)}"
    )
    yield feed
    feed.close()


def test_full_load_then_channel(copy: RedisDenylist, redis_prefix: str) -> None:
    r = redis.Redis.from_url(support.REDIS_URL)
    write(r, redis_prefix, entry("jti", "before-start"), publish=False)
    r.set(f"{redis_prefix}deny:loaded", "1")  # the issuer's marker is not an entry
    # entries of another prefix are not ours
    write(r, redis_prefix + "other:", entry("jti", "elsewhere"), publish=False)
    copy.start()
    assert copy.wait_ready(10)
    assert copy.check("k", claims(jti="before-start")) == "revoked"
    assert copy.check("k", claims(jti="elsewhere")) is None
    version = copy.version
    write(r, redis_prefix, entry("sid", "sid_live"))
    assert copy.wait_for_version(version, 5)
    assert copy.check("k", claims(sid="sid_live")) == "revoked"
    r.delete(f"{redis_prefix}other:deny:jti:elsewhere")
    r.close()


def test_reset_message_reloads_every_key(copy: RedisDenylist, redis_prefix: str) -> None:
    copy.start()
    assert copy.wait_ready(10)
    r = redis.Redis.from_url(support.REDIS_URL)
    write(r, redis_prefix, entry("client", "cli_rebuilt"), publish=False)  # a rebuild writes keys
    loads = copy.loads
    r.publish(f"{redis_prefix}denylist", json.dumps({"kind": "reset"}))
    assert wait_until(lambda: copy.loads > loads)
    assert copy.check("k", claims(client_id="cli_rebuilt")) == "revoked"
    r.close()


def test_recovers_after_its_connection_is_killed(copy: RedisDenylist, redis_prefix: str) -> None:
    copy.start()
    assert copy.wait_ready(10)
    r = redis.Redis.from_url(support.REDIS_URL)
    # Written while nobody listens for it (no publish): only a full load can find it.
    write(r, redis_prefix, entry("jti", "missed-message"), publish=False)
    assert copy.check("k", claims(jti="missed-message")) is None
    loads = copy.loads
    mine = [c["id"] for c in r.client_list() if c.get("name") == copy.client_name]
    assert mine
    for client_id in mine:
        r.client_kill_filter(_id=client_id)
    assert wait_until(lambda: copy.loads > loads)
    assert copy.check("k", claims(jti="missed-message")) == "revoked"
    version = copy.version
    write(r, redis_prefix, entry("jti", "after-reconnect"))
    assert copy.wait_for_version(version, 5)
    assert copy.check("k", claims(jti="after-reconnect")) == "revoked"
    r.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A throwaway redis-server on a free port that the test may stop and start again."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed for the restart tests"
    port = support.free_port()

    class Own:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(
                [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp_path,
            )
            client = redis.Redis.from_url(self.url)
            assert wait_until(lambda: _pings(client))
            client.close()

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(10)
                self.proc = None

    own = Own()
    own.start()
    yield own
    own.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_fails_closed_while_redis_is_down_and_recovers_when_it_is_back(own_redis: Any) -> None:
    prefix = "issuer:"
    feed = RedisDenylist(own_redis.url, prefix=prefix, max_staleness=1.0, heartbeat=0.2, reconnect_delay=0.1)
    feed.start()
    try:
        assert feed.wait_ready(10)
        r = redis.Redis.from_url(own_redis.url)
        write(r, prefix, entry("sub", "usr_gone"))
        assert wait_until(lambda: feed.check("k", claims(sub="usr_gone")) == "revoked")
        r.close()
        own_redis.stop()
        assert wait_until(lambda: feed.stale)
        assert feed.check("k", claims(sub="someone-else")) == "denylist_stale"
        own_redis.start()  # empty: no save, no append-only file
        r = redis.Redis.from_url(own_redis.url)
        # As the issuer's rebuild does: write the keys, then announce a reset. (The copy may have
        # resubscribed, and loaded, before the write; the reset makes it load again.)
        write(r, prefix, entry("jti", "while-down"), publish=False)
        r.publish(f"{prefix}denylist", json.dumps({"kind": "reset"}))
        assert wait_until(lambda: not feed.stale and feed.check("k", claims(jti="while-down")) == "revoked")
        # what it knew before the restart is kept until its exp: a flushed Redis un-revokes nothing
        assert feed.check("k", claims(sub="usr_gone")) == "revoked"
        assert feed.check("k", claims(sub="someone-else")) is None
        r.close()
    finally:
        feed.close()


# ---------------------------------------------------------------- against a running issuer


def _revoke(issuer: Issuer, token: str) -> None:
    response = support.post(
        issuer.url + "/revoke", data={"token": token}, auth=(issuer.client_id, issuer.client_secret)
    )
    assert response.status_code == 200, response.text


def test_revocation_on_the_issuer_reaches_the_redis_copy_within_a_second(
    redis_issuer: Issuer, redis_prefix: str
) -> None:
    issuer = redis_issuer
    first, second = issuer.token(), issuer.token()
    denylist = RedisDenylist(support.REDIS_URL, prefix=redis_prefix)
    with Verifier(issuer=issuer.url, audience=issuer.url, denylist=denylist) as verifier:
        assert denylist.wait_ready(10)
        verifier.verify(first)
        version = denylist.version
        _revoke(issuer, first)
        assert denylist.wait_for_version(version, 1.0), "the revocation did not arrive within one second"
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(first)
        assert caught.value.reason == "revoked"
        assert verifier.verify(second)["client_id"] == issuer.client_id  # only the revoked one


def test_revocation_on_the_issuer_reaches_the_feed_copy_within_a_second(redis_issuer: Issuer) -> None:
    issuer = redis_issuer
    token = issuer.token()
    client_id, secret = register_client(issuer.server.env, "--can-introspect")
    denylist = FeedDenylist(issuer.url, client_id=client_id, client_secret=secret, poll_interval=0.1)
    with Verifier(issuer=issuer.url, audience=issuer.url, denylist=denylist) as verifier:
        assert denylist.wait_ready(10)
        verifier.verify(token)
        version = denylist.version
        _revoke(issuer, token)
        assert denylist.wait_for_version(version, 1.0), "the revocation did not arrive within one second"
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(token)
        assert caught.value.reason == "revoked"
