"""Nothing lost under faults: two instances on one PostgreSQL and one Redis, under a bounded load
(:mod:`tests.deploy.load`: client_credentials, password logins, refresh chains alternating
between the instances), while one thing goes wrong at a time:

* ``kill-9``: one instance killed in the middle of rotations, then started again;
* ``pg-restart``: PostgreSQL cut off from both instances (a relay the test cuts and restores);
* ``redis-kill``: the deployment's Redis killed and started again, empty;
* ``redis-partition``: Redis cut off from one instance only (a relay in front of it);
* ``clock-skew``: the instances' clocks 6 s apart (+3 s and -3 s, ``ISSUER_TEST_CLOCK_OFFSET``).

What must hold: no 500 (an outage is a 503 with ``Retry-After``); no family forked (each chain has
exactly one live token) and no rotation acknowledged and lost (it is the last one its client was
answered); a token that met a 503 or no answer still works when retried; a revoked token is never
accepted anywhere (a 503 where the denylist cannot be checked); recovery within 15 s of the end
of the fault. Each test prints its figures line (``pytest -s``, or the captured output of a
failure) and writes it as JSON to ``faults-NAME.json`` in its tmp dir.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests import support
from tests.deploy.load import Balancer, Chain, Load, RevocationWatch, check_chains, record
from tests.revocation.support import (
    Client,
    Deployment,
    RedisServer,
    active,
    introspect_response,
    login,
    redis_server,
    refresh,
    revoke,
    until,
)

THREADS = 3  # one refresh chain each
REQUESTS_PER_THREAD = 2000  # the bound on the count; the cap below bounds the time
CAP = 40.0  # seconds: the whole load of one fault, fault and recovery included
RECOVERY = 15.0  # seconds after the fault ends by which both instances answer again
OUTAGE = 3.0  # seconds a cut-off lasts (the time it takes is only an ordering, never asserted)


@dataclass
class Rig:
    """A deployment with an app, an introspecting resource server and alice; two instances."""

    deployment: Deployment
    database_url: str  # direct, for the checks
    app: Client
    rs: Client
    envs: list[dict[str, str]]
    instances: list[support.ServerProcess] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [instance.url for instance in self.instances]

    def start(self, i: int, tag: str) -> support.ServerProcess:
        port = self.instances[i].port if i < len(self.instances) else None
        server = support.ServerProcess(self.envs[i], port=port)
        server.start(self.deployment.tmp / f"instance-{i}-{tag}.log", timeout=60)
        if i < len(self.instances):
            self.instances[i] = server
        else:
            self.instances.append(server)
        return server

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in self.deployment.tmp.glob("instance-*.log")
        )


@contextlib.contextmanager
def rig(
    pg_url: str,
    tmp: Path,
    key_env: dict[str, str],
    redis_url: str,
    prefix: str = "issuer:",
    per_instance: tuple[dict[str, str], dict[str, str]] = ({}, {}),
    **extra: str,
) -> Iterator[Rig]:
    # A rotation whose answer the load lost (a 30 s client timeout while an instance waits out an
    # outage) is retried with the same token, as a real client does; the grace window must cover
    # that retry, or a busy machine turns a lost answer into reuse detection and a dead chain.
    extra = {"ISSUER_REFRESH_GRACE": "60", **extra}
    env = support.issuer_env(
        pg_url,
        tmp / "keys",
        ISSUER_REDIS_URL=redis_url,
        ISSUER_REDIS_PREFIX=prefix,
        ISSUER_URL="https://issuer.test",
        ISSUER_RETRY_AFTER="2",
        **key_env,
        **extra,
    )
    deployment = Deployment(env, tmp)
    app = deployment.client("app", "password", "refresh_token", "client_credentials")
    rs = deployment.client("rs", "client_credentials", introspect=True)
    deployment.user("alice")
    setup = Rig(deployment, pg_url, app, rs, [dict(env, **extra) for extra in per_instance])
    try:
        for i in range(2):
            setup.start(i, "0")
        yield setup
    finally:
        setup.stop()


def _figures(balancer: Balancer, chains: list[Chain], database_url: str, **extra: Any) -> dict[str, Any]:
    forked, lost, details = check_chains(database_url, chains)
    counts = balancer.counts
    answered = sum(n for key, n in counts.items() if key.isdigit())
    figures: dict[str, Any] = {
        "requests": answered + counts["unanswered"],
        "ok": counts["200"],
        "503": counts["503"],
        "5xx": counts["5xx"] - counts["503"],
        "4xx": sum(n for key, n in counts.items() if key.isdigit() and 400 <= int(key) < 500),
        "unanswered": counts["unanswered"],
        "refused": counts["refused"],
        "chains": len(chains),
        "rotations": sum(chain.rotations for chain in chains),
        "retries": sum(chain.retries for chain in chains),
        "forked": forked,
        "lost": lost,
        **extra,
    }
    figures["details"] = details
    return figures


def _assert_nothing_lost(
    setup: Rig, balancer: Balancer, chains: list[Chain], figures: dict[str, Any]
) -> None:
    assert balancer.errors == [], balancer.errors  # no 500: an outage is a 503
    assert balancer.problems == [], balancer.problems  # every 503 had Retry-After; no chain died
    assert [chain.dead for chain in chains if chain.dead] == []
    assert figures["forked"] == 0 and figures["lost"] == 0, figures["details"]
    # and by presenting: every chain's last answered token rotates, on each instance in turn
    for chain in chains:
        for url in setup.urls:
            response = refresh(url, setup.app, chain.token)
            assert response.status_code == 200, response.text
            chain.token = response.json()["refresh_token"]
    tracebacks = [line for line in setup.logs().splitlines() if "Traceback" in line]
    for line in tracebacks:
        print(line[-4000:])
    assert tracebacks == []


def _recovered_within(urls: list[str], app: Client, within: float = RECOVERY) -> float:
    """Seconds until a login and its refresh succeed on every instance (asserted <= ``within``)."""
    started = time.monotonic()

    def works(url: str) -> bool:
        try:
            tokens = support.post(
                url + "/token",
                auth=app.auth,
                data={"grant_type": "password", "username": "alice", "password": support.PASSWORD},
                timeout=5,
            )
            if tokens.status_code != 200:
                return False
            return refresh(url, app, tokens.json()["refresh_token"]).status_code == 200
        except httpx.TransportError:
            return False

    pending = set(urls)
    while pending and time.monotonic() - started < within + 5:
        pending = {url for url in pending if not works(url)}
        if pending:
            time.sleep(0.1)
    took = time.monotonic() - started
    assert not pending, f"{sorted(pending)} did not recover within {within + 5:.0f} s"
    assert took <= within, f"recovery took {took:.1f} s"
    return round(took, 2)


# ---------------------------------------------------------------- kill -9


def test_kill_9_in_the_middle_of_rotations(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    with rig(pg_url, tmp_path, key_env, support.REDIS_URL, redis_prefix) as setup:
        balancer = Balancer(setup.urls)
        chains = [Chain.login(setup.urls[i % 2], setup.app) for i in range(THREADS)]
        with Load(balancer, setup.app, chains, REQUESTS_PER_THREAD, cap=CAP) as load:
            assert load.wait_ok(60)
            victim = setup.instances[0]
            assert victim.proc is not None
            # in the middle of rotations: requests are in flight on the victim when it dies
            until(lambda: balancer.inflight[victim.url] > 0, hang_guard=10, step=0.001)
            victim.proc.kill()
            assert victim.proc.wait(timeout=30) == -9
            # the balancer still sends to it (a load balancer notices by health checks): refused,
            # so the other instance answers; the answers the victim never gave are retried
            assert load.wait_ok(load.ok + 40)
            setup.start(0, "1")  # same port: the balancer's URL is the same
            assert load.wait_ok(load.ok + 60)
        figures = _figures(balancer, chains, setup.database_url)
        record(tmp_path, "kill-9", figures)
        _assert_nothing_lost(setup, balancer, chains, figures)
        assert figures["refused"] > 0  # the kill did happen under load


# ---------------------------------------------------------------- PostgreSQL


def test_postgresql_restart_under_load(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    relay = support.TcpProxy("127.0.0.1", 5432).start()  # "PostgreSQL" as both instances see it
    proxied = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    # key ring reloads every second: some fall in the outage (a warning, never a traceback)
    direct = {"ISSUER_DATABASE_URL": proxied, "ISSUER_KEY_RELOAD_INTERVAL": "1"}
    try:
        with rig(pg_url, tmp_path, key_env, support.REDIS_URL, redis_prefix, (direct, direct)) as setup:
            balancer = Balancer(setup.urls)
            chains = [Chain.login(setup.urls[i % 2], setup.app) for i in range(THREADS)]
            with Load(balancer, setup.app, chains, REQUESTS_PER_THREAD, cap=CAP) as load:
                assert load.wait_ok(60)
                relay.stop()  # down: every connection reset, new ones refused
                assert until(lambda: balancer.counts["503"] >= 5, hang_guard=20)
                time.sleep(OUTAGE)  # the outage goes on under load (an ordering, not an assertion)
                during = balancer.counts["503"]
                relay.start()  # back
                recovery = _recovered_within(setup.urls, setup.app)
                assert load.wait_ok(load.ok + 60)
            figures = _figures(balancer, chains, setup.database_url, recovery_s=recovery)
            record(tmp_path, "pg-restart", figures)
            assert during >= 5  # 503s during the outage
            _assert_nothing_lost(setup, balancer, chains, figures)
    finally:
        relay.stop()


# ---------------------------------------------------------------- Redis


@dataclass
class Revocation:
    """A login whose access token (``jti``) or refresh token (the family) is revoked at ``url``."""

    url: str
    kind: str
    tokens: dict[str, Any]
    statuses: list[int] = field(default_factory=list)

    def attempt(self, setup: Rig, watch: RevocationWatch) -> int:
        """Revoke; once answered 200 the tokens are watched (a 503 is not an acknowledgement:
        the client retries later, see :meth:`until_acknowledged`)."""
        token = self.tokens["access_token" if self.kind == "jti" else "refresh_token"]
        status = revoke(self.url, setup.app, token).status_code
        self.statuses.append(status)
        if status == 200:
            if self.kind == "jti":
                watch.add(access=self.tokens["access_token"])
            else:  # the family: its refresh token and its access tokens (sid)
                watch.add(access=self.tokens["access_token"], refresh=self.tokens["refresh_token"])
        return status

    def until_acknowledged(self, setup: Rig, watch: RevocationWatch) -> None:
        if self.statuses[-1] != 200:
            assert until(lambda: self.attempt(setup, watch) == 200, hang_guard=RECOVERY)


def _revoked(url: str, setup: Rig, watch: RevocationWatch, kind: str) -> Revocation:
    revocation = Revocation(url, kind, login(url, setup.app))
    assert revocation.attempt(setup, watch) in (200, 503)
    return revocation


def _revocation_figures(
    balancer: Balancer,
    chains: list[Chain],
    setup: Rig,
    revocations: list[Revocation],
    watch: RevocationWatch,
    recovery: float,
) -> dict[str, Any]:
    """The Redis faults' figures: the load's, plus what became of revocations and revoked tokens."""
    return _figures(
        balancer,
        chains,
        setup.database_url,
        revocations=len(revocations),
        revocations_503=sum(r.statuses.count(503) for r in revocations),
        revoked=len(watch.access) + len(watch.refresh),
        revoked_checks=sum(watch.counts.values()),
        revoked_503=sum(n for key, n in watch.counts.items() if key.endswith(" 503")),
        revoked_accepted=len(watch.accepted),
        recovery_s=recovery,
    )


def _final_revocation_check(setup: Rig, watch: RevocationWatch) -> None:
    """After recovery every instance answers, and says "revoked", for every watched token."""
    for url in setup.urls:
        for token in watch.access:
            response = introspect_response(url, setup.rs, token)
            assert response.status_code == 200 and response.json()["active"] is False, response.text
        for token in watch.refresh:
            assert refresh(url, setup.app, token).status_code == 400


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def test_redis_killed_and_restarted(
    pg_url: str, own_redis: RedisServer, tmp_path: Path, key_env: dict[str, str]
) -> None:
    with rig(pg_url, tmp_path, key_env, own_redis.url) as setup:
        balancer = Balancer(setup.urls)
        chains = [Chain.login(setup.urls[i % 2], setup.app) for i in range(THREADS)]
        watch = RevocationWatch(lambda: setup.urls, setup.app, setup.rs)
        revocations = []
        back: RedisServer | None = None
        try:
            with Load(balancer, setup.app, chains, REQUESTS_PER_THREAD, cap=CAP) as load, watch:
                for i, kind in enumerate(("jti", "sid", "jti", "sid")):
                    revocations.append(_revoked(setup.urls[i % 2], setup, watch, kind))
                logins = [login(url, setup.app) for url in setup.urls]  # revoked during the outage
                assert load.wait_ok(60)
                own_redis.stop()  # SIGKILL
                assert until(lambda: balancer.counts["503"] >= 5, hang_guard=20)
                # revocations while Redis is down: durable (the database), answered 503, retried
                for tokens, kind, url in zip(logins, ("jti", "sid"), setup.urls, strict=True):
                    revocations.append(Revocation(url, kind, tokens))
                    assert revocations[-1].attempt(setup, watch) == 503
                time.sleep(OUTAGE)
                during = balancer.counts["503"]
                back = RedisServer(tmp_path, port=own_redis.port).start()  # the same address, empty
                recovery = _recovered_within(setup.urls, setup.app)
                for revocation in revocations:
                    revocation.until_acknowledged(setup, watch)
                assert load.wait_ok(load.ok + 60)
                watch.sweep()
            _final_revocation_check(setup, watch)
            figures = _revocation_figures(balancer, chains, setup, revocations, watch, recovery)
            record(tmp_path, "redis-kill", figures)
            assert watch.accepted == [], watch.accepted
            assert [r.statuses[-1] for r in revocations] == [200] * 6
            assert during >= 5
            _assert_nothing_lost(setup, balancer, chains, figures)
        finally:
            if back is not None:
                back.stop()


def test_redis_partitioned_from_one_instance(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    target = urlparse(support.REDIS_URL)
    relay = support.TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    cut_off = {"ISSUER_REDIS_URL": f"redis://127.0.0.1:{relay.port}/0"}
    try:
        with rig(pg_url, tmp_path, key_env, support.REDIS_URL, redis_prefix, ({}, cut_off)) as setup:
            balancer = Balancer(setup.urls)
            chains = [Chain.login(setup.urls[i % 2], setup.app) for i in range(THREADS)]
            watch = RevocationWatch(lambda: setup.urls, setup.app, setup.rs)
            revocations = []
            healthy, partitioned = setup.urls
            with Load(balancer, setup.app, chains, REQUESTS_PER_THREAD, cap=CAP) as load, watch:
                for i, kind in enumerate(("jti", "sid")):
                    revocations.append(_revoked(setup.urls[i % 2], setup, watch, kind))
                probe = login(healthy, setup.app)["access_token"]
                assert load.wait_ok(60)
                relay.stop()  # instance two loses Redis; instance one does not
                assert until(lambda: introspect_response(partitioned, setup.rs, probe).status_code == 503)
                # revocations on either side of the partition: answered 200 where Redis is
                # reachable, 503 (durable, retried later) where it is not
                for url in (healthy, partitioned):
                    for kind in ("jti", "sid"):
                        revocations.append(_revoked(url, setup, watch, kind))
                time.sleep(OUTAGE)
                during = balancer.counts["503"]
                healthy_ok = refresh(healthy, setup.app, login(healthy, setup.app)["refresh_token"])
                relay.start()
                recovery = _recovered_within(setup.urls, setup.app)
                for revocation in revocations:
                    revocation.until_acknowledged(setup, watch)
                assert load.wait_ok(load.ok + 60)
                watch.sweep()
            _final_revocation_check(setup, watch)
            figures = _revocation_figures(balancer, chains, setup, revocations, watch, recovery)
            record(tmp_path, "redis-partition", figures)
            assert watch.accepted == [], watch.accepted
            assert [r.statuses[-1] for r in revocations] == [200] * 6
            assert [r.statuses[0] for r in revocations[2:]] == [200, 200, 503, 503]
            assert healthy_ok.status_code == 200  # the other instance went on serving
            assert during >= 1  # the partitioned one answered 503
            _assert_nothing_lost(setup, balancer, chains, figures)
    finally:
        relay.stop()


# ---------------------------------------------------------------- clock skew

SKEW = 3  # each instance's clock this far off, in opposite directions: 2 * SKEW apart
GRACE = 8  # > 2 * SKEW + 1: a replay on the fast instance right after a rotation on the slow one


def test_clock_skew_between_instances(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    offsets = ({"ISSUER_TEST_CLOCK_OFFSET": str(SKEW)}, {"ISSUER_TEST_CLOCK_OFFSET": str(-SKEW)})
    settings = {"ISSUER_REFRESH_GRACE": str(GRACE), "ISSUER_CLOCK_SKEW": str(2 * SKEW)}
    with rig(pg_url, tmp_path, key_env, support.REDIS_URL, redis_prefix, offsets, **settings) as setup:
        fast, slow = setup.urls
        app, rs = setup.app, setup.rs
        setup.deployment.user("bob")  # his chains are for the grace window; alice logs out
        checks: dict[str, int] = {"grace_replays": 0, "reuse_detected": 0, "cutoff_refused": 0}

        # grace window across the instances, both ways: the same successor
        rotated: list[tuple[str, str, str, float]] = []  # (replay at, predecessor, successor, when)
        for first, second in ((fast, slow), (slow, fast)):
            predecessor = login(first, app, "bob")["refresh_token"]
            response = refresh(first, app, predecessor)
            assert response.status_code == 200, response.text
            successor = response.json()["refresh_token"]
            replay = refresh(second, app, predecessor)
            assert replay.status_code == 200, replay.text
            assert replay.json()["refresh_token"] == successor
            checks["grace_replays"] += 1
            rotated.append((second, predecessor, successor, time.time()))

        def fresh_logins_work() -> bool:
            fresh = [login(url, app)["access_token"] for url in (fast, slow)]
            return all(active(url, rs, token) for url in (fast, slow) for token in fresh)

        # log out everywhere, by an operator whose clock is either instance's: every token minted
        # before it, on either instance, is refused on both; the families end. The cut-off is
        # ISSUER_CLOCK_SKEW ahead of the operator's clock, so a new login works once every clock
        # has passed it (polled for before the next round, and at the end).
        for n, revoking_env in enumerate(reversed(setup.envs)):
            if n:
                assert until(fresh_logins_work, hang_guard=4 * SKEW + 10)
            minted = [login(url, app) for url in (fast, slow)]
            for tokens in minted:
                for url in (fast, slow):
                    assert active(url, rs, tokens["access_token"])
            out = support.run_cli_here(revoking_env, "sessions", "revoke", "--username", "alice")
            assert out.returncode == 0, out.stderr
            for tokens in minted:
                for url in (fast, slow):
                    assert not active(url, rs, tokens["access_token"]), (revoking_env, url)
                    assert refresh(url, app, tokens["refresh_token"]).status_code == 400
                    checks["cutoff_refused"] += 1

        # after the window (as the slower clock counts it), the same replay is reuse, both ways
        last = max(when for *_, when in rotated)
        time.sleep(max(0.0, last + GRACE + 2 * SKEW + 1.5 - time.time()))  # an ordering
        for url, predecessor, successor, _ in rotated:
            reused = refresh(url, app, predecessor)
            assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", reused.text
            assert refresh(url, app, successor).status_code == 400  # the family is gone
            checks["reuse_detected"] += 1

        # the cut-off does not outlast the skew: a new login works on every instance, soon
        assert until(fresh_logins_work, hang_guard=4 * SKEW + 10)

        record(tmp_path, "clock-skew", {"skew_s": 2 * SKEW, "grace_s": GRACE, **checks})
        assert "Traceback" not in setup.logs()
