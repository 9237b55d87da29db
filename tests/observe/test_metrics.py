"""``GET /metrics``: who may read it, and every metric changes when its event happens (scrape, act,
scrape) on a real server over PostgreSQL and Redis, each reached through a TCP relay the test can
cut to cause the outages the error counters count."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import jwt
import prometheus_client
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from issuer.observability.metrics import BUCKETS, _HttpTallies
from issuer.runtime import Runtime
from issuer.store.refresh import Outcome
from tests import support
from tests.conftest import make_settings

PASSWORD = "correct horse battery staple"
METRICS_TOKEN = "metrics-" + "x7Kq2Zp9Lm4Wv8Rt"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(server: support.ServerProcess) -> Samples:
    response = support.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def create_client(env: dict[str, str], cwd: Path, *grants: str, introspect: bool = False) -> tuple[str, str]:
    extra = ("--can-introspect",) if introspect else ()
    return support.register_client(env, *extra, grants=grants, scope="read")


# ---------------------------------------------------------------- who may read it


@pytest.mark.parametrize(
    ("settings", "headers", "status"),
    [
        ({}, {}, 404),
        ({}, {"Authorization": f"Bearer {METRICS_TOKEN}"}, 404),  # no token configured: nobody
        ({"ISSUER_METRICS_TOKEN": METRICS_TOKEN}, {}, 404),
        ({"ISSUER_METRICS_TOKEN": METRICS_TOKEN}, {"Authorization": "Bearer wrong-token-0123456789"}, 404),
        ({"ISSUER_METRICS_TOKEN": METRICS_TOKEN}, {"Authorization": f"Bearer {METRICS_TOKEN}x"}, 404),
        ({"ISSUER_METRICS_TOKEN": METRICS_TOKEN}, {"Authorization": f"Basic {METRICS_TOKEN}"}, 404),
        ({"ISSUER_METRICS_TOKEN": METRICS_TOKEN}, {"Authorization": f"Bearer {METRICS_TOKEN}"}, 200),
        ({"ISSUER_METRICS_PUBLIC": "true"}, {}, 200),
    ],
    ids=[
        "unconfigured",
        "unconfigured-with-token",
        "no-credentials",
        "wrong-token",
        "longer-token",
        "wrong-scheme",
        "right-token",
        "public",
    ],
)
def test_metrics_answer_only_the_token_or_everyone_when_public(
    settings: dict[str, str], headers: dict[str, str], status: int, sqlite_url: str, tmp_path: Path, key_env
) -> None:
    env = support.issuer_env(sqlite_url, tmp_path / "keys", **settings, **key_env)
    with support.running_server(env, tmp_path / "server.log") as server:
        refused = support.post(server.url + "/token", data={"grant_type": "client_credentials"})
        assert refused.status_code == 401  # one counted response for the scrape to show
        response = support.get(server.url + "/metrics", headers=headers)
        assert response.status_code == status
        if status == 404:  # the same answer as a path that does not exist
            assert response.json() == support.get(server.url + "/no-such-path").json()
            assert "issuer_" not in response.text
        else:
            samples = parse(response.text)
            assert value(samples, "issuer_http_responses_total", endpoint="/token", status="401") == 1


def test_bad_metrics_token_setting_is_refused(sqlite_url: str, tmp_path: Path, key_env) -> None:
    env = support.issuer_env(sqlite_url, tmp_path / "keys", ISSUER_METRICS_TOKEN="short", **key_env)
    result = support.run_cli_here(env, "settings")
    assert result.returncode != 0
    assert "ISSUER_METRICS_TOKEN" in result.stderr and "short" not in result.stderr
    env["ISSUER_METRICS_TOKEN"] = METRICS_TOKEN
    shown = support.run_cli_here(env, "settings")
    assert shown.returncode == 0 and METRICS_TOKEN not in shown.stdout
    assert "ISSUER_METRICS_TOKEN=(set)" in shown.stdout


# ---------------------------------------------------------------- scrape, act, scrape


@pytest.fixture
def relays(pg_url: str) -> Iterator[tuple[str, str, support.TcpProxy, support.TcpProxy]]:
    target = urlparse(pg_url)
    pg = support.TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    redis_target = urlparse(support.REDIS_URL)
    rd = support.TcpProxy(redis_target.hostname or "127.0.0.1", redis_target.port or 6379).start()
    try:
        database = pg_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{pg.port}")
        redis_url = f"redis://127.0.0.1:{rd.port}{redis_target.path or '/0'}"
        yield database, redis_url, pg, rd
    finally:
        pg.stop()
        rd.stop()


def test_every_metric_changes_when_its_event_happens(
    relays, redis_prefix: str, tmp_path: Path, key_env
) -> None:
    database, redis_url, pg_relay, redis_relay = relays
    env = support.issuer_env(
        database,
        tmp_path / "keys",
        ISSUER_REDIS_URL=redis_url,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_METRICS_TOKEN=METRICS_TOKEN,
        ISSUER_RATE_LIMIT_PASSWORD="3",  # alice logs in three times
        ISSUER_CLIENT_CACHE_TTL="0",
        ISSUER_RETRY_AFTER="1",
        **key_env,
    )
    app = create_client(env, tmp_path, "client_credentials", "password", "refresh_token")
    introspector = create_client(env, tmp_path, "client_credentials", introspect=True)
    assert (
        support.run_cli_here(env, "users", "create", "--username", "alice", input=PASSWORD + "\n").returncode
        == 0
    )
    with support.running_server(env, tmp_path / "server.log") as server:
        token_url = server.url + "/token"

        def login() -> dict[str, str]:
            data = {"grant_type": "password", "username": "alice", "password": PASSWORD}
            response = support.post(token_url, auth=app, data=data)
            assert response.status_code == 200, response.text
            return response.json()

        def refresh(token: str) -> httpx.Response:
            return support.post(
                token_url, auth=app, data={"grant_type": "refresh_token", "refresh_token": token}
            )

        before = scrape(server)
        assert value(before, "issuer_signing_keys", state="active") == 1

        # tokens issued by grant, latency per endpoint and grant, responses by status
        assert support.post(token_url, auth=app, data={"grant_type": "client_credentials"}).status_code == 200
        pair = login()
        after = scrape(server)
        for grant in ("client_credentials", "password"):
            assert (
                value(after, "issuer_tokens_issued_total", grant=grant)
                == value(before, "issuer_tokens_issued_total", grant=grant) + 1
            )
            assert (
                value(after, "issuer_http_request_duration_seconds_count", endpoint="/token", grant=grant)
                == value(before, "issuer_http_request_duration_seconds_count", endpoint="/token", grant=grant)
                + 1
            )
        assert (
            value(after, "issuer_http_request_duration_seconds_sum", endpoint="/token", grant="password") > 0
        )
        assert value(after, "issuer_http_responses_total", endpoint="/token", status="200") == (
            value(before, "issuer_http_responses_total", endpoint="/token", status="200") + 2
        )
        assert value(after, "issuer_http_request_duration_seconds_count", endpoint="/metrics", grant="") >= 1

        # refresh rotation, grace-window replay, reuse detection and the family it revokes
        before = after
        first = pair["refresh_token"]
        rotated = refresh(first)
        assert rotated.status_code == 200
        assert refresh(first).status_code == 200  # the same token again, inside the grace window
        second = rotated.json()["refresh_token"]
        assert refresh(second).status_code == 200  # the successor rotates: `first` is now old
        assert refresh(first).status_code == 400  # reuse: the family is revoked
        after = scrape(server)
        assert value(after, "issuer_refresh_total", outcome="rotated") == (
            value(before, "issuer_refresh_total", outcome="rotated") + 2
        )
        assert value(after, "issuer_refresh_total", outcome="replayed") == (
            value(before, "issuer_refresh_total", outcome="replayed") + 1
        )
        assert value(after, "issuer_refresh_total", outcome="reused") == (
            value(before, "issuer_refresh_total", outcome="reused") + 1
        )
        assert value(after, "issuer_families_revoked_total", reason="reuse") == (
            value(before, "issuer_families_revoked_total", reason="reuse") + 1
        )
        assert value(after, "issuer_denylist_additions_total", kind="sid") == (
            value(before, "issuer_denylist_additions_total", kind="sid") + 1
        )
        assert value(after, "issuer_denylist_entries") == value(before, "issuer_denylist_entries") + 1

        # a client revokes its refresh token (RFC 7009): another family revoked, another entry
        before = after
        revoked = support.post(server.url + "/revoke", auth=app, data={"token": login()["refresh_token"]})
        assert revoked.status_code == 200
        after = scrape(server)
        assert value(after, "issuer_families_revoked_total", reason="client") == (
            value(before, "issuer_families_revoked_total", reason="client") + 1
        )
        assert value(after, "issuer_denylist_entries") == value(before, "issuer_denylist_entries") + 1

        # a token whose kid is not in the JWKS
        before = after
        foreign_key = ec.generate_private_key(ec.SECP256R1())
        now = int(time.time())
        forged = jwt.encode(
            {"iss": server.url, "sub": "x", "client_id": "x", "jti": "j", "iat": now, "exp": now + 60},
            foreign_key,
            algorithm="ES256",
            headers={"kid": "not-a-kid-of-ours", "typ": "at+jwt"},
        )
        introspected = support.post(server.url + "/introspect", auth=introspector, data={"token": forged})
        assert introspected.json() == {"active": False}
        live = support.post(token_url, auth=app, data={"grant_type": "client_credentials"}).json()[
            "access_token"
        ]
        assert support.post(server.url + "/introspect", auth=introspector, data={"token": live}).json()[
            "active"
        ]
        after = scrape(server)
        assert value(after, "issuer_unknown_kid_total") == value(before, "issuer_unknown_kid_total") + 1
        for active in ("true", "false"):  # verification outcomes
            assert value(after, "issuer_introspections_total", active=active) == (
                value(before, "issuer_introspections_total", active=active) + 1
            )

        # the password rate limit
        before = after
        wrong = {"grant_type": "password", "username": "mallory", "password": "guess guess guess"}
        statuses = [support.post(token_url, auth=app, data=wrong).status_code for _ in range(4)]
        assert statuses == [400, 400, 400, 429]
        after = scrape(server)
        assert value(after, "issuer_rate_limited_total", limit="password") == (
            value(before, "issuer_rate_limited_total", limit="password") + 1
        )
        assert value(after, "issuer_http_responses_total", endpoint="/token", status="429") == (
            value(before, "issuer_http_responses_total", endpoint="/token", status="429") + 1
        )

        # key ages and states: time passes, then a forced rotation step changes the states
        before = after
        time.sleep(1.1)
        after = scrape(server)
        assert value(after, "issuer_signing_key_age_seconds", state="active") >= (
            value(before, "issuer_signing_key_age_seconds", state="active") + 1
        )
        assert value(after, "issuer_signing_key_state_age_seconds", state="active") > 0
        states_before = {
            s: value(after, "issuer_signing_keys", state=s) for s in ("next", "active", "retired")
        }
        step = support.run_cli_here(env, "keys", "rotate", "--force")
        assert step.returncode == 0, step.stderr
        after = scrape(server)
        states_after = {
            s: value(after, "issuer_signing_keys", state=s) for s in ("next", "active", "retired")
        }
        assert states_after != states_before and states_after["active"] == 1

        # Redis errors: cut Redis, introspect a live access token (a denylist check) -> 503
        before = after
        access = login()["access_token"]
        redis_relay.stop()
        try:
            refused = support.post(server.url + "/introspect", auth=introspector, data={"token": access})
            assert refused.status_code == 503
        finally:
            redis_relay.start()
        after = scrape(server)
        assert value(after, "issuer_backend_errors_total", backend="redis") > value(
            before, "issuer_backend_errors_total", backend="redis"
        )

        # database errors: cut PostgreSQL, ask for a token -> 503; the scrape itself still answers
        before = after
        pg_relay.stop()
        try:
            refused = support.post(token_url, auth=app, data={"grant_type": "client_credentials"})
            assert refused.status_code == 503
            during = scrape(server)
            assert value(during, "issuer_metrics_scrape_errors_total") == (
                value(before, "issuer_metrics_scrape_errors_total") + 1
            )
        finally:
            pg_relay.start()
        after = scrape(server)
        assert value(after, "issuer_backend_errors_total", backend="database") > value(
            before, "issuer_backend_errors_total", backend="database"
        )


def test_unknown_paths_and_query_strings_add_no_series(sqlite_url: str, tmp_path: Path, key_env) -> None:
    """Endpoint labels are the routes' paths: a scanner's random paths cannot grow the registry."""
    env = support.issuer_env(sqlite_url, tmp_path / "keys", ISSUER_METRICS_TOKEN=METRICS_TOKEN, **key_env)
    with support.running_server(env, tmp_path / "server.log") as server:
        for i in range(20):
            assert support.get(f"{server.url}/scan-{i}").status_code == 404
            assert support.get(f"{server.url}/.well-known/jwks.json?x={i}").status_code == 200
        samples = scrape(server)
    endpoints = {
        dict(labels).get("endpoint") for (name, labels) in samples if name.startswith("issuer_http_")
    }
    # the readiness probe's metadata requests and ours; the scrape itself is counted after it answers
    assert endpoints == {"/.well-known/jwks.json", "/.well-known/oauth-authorization-server"}
    assert (
        value(samples, "issuer_http_responses_total", endpoint="/.well-known/jwks.json", status="200") == 20
    )


# ---------------------------------------------------------------- runtimes in one process


async def test_two_runtimes_in_one_process_keep_their_own_counters(
    sqlite_url: str, tmp_path: Path, material
) -> None:
    """Each runtime renders its own registry (never the global one), and a component's own tally
    reaches the counter at the next scrape, once."""
    first = Runtime(make_settings(sqlite_url, tmp_path / "first"), material=material)
    second = Runtime(make_settings(sqlite_url, tmp_path / "second"), material=material)
    try:
        first.metrics.observe("/token", "password", 200, 0.003)
        first.passwords.verifications += 2  # as two password checks would
        first.grants.refresh_outcomes[Outcome.REUSED] += 1
        for _ in range(2):  # a second scrape carries nothing twice
            one = parse((await first.metrics.render()).decode())
            other = parse((await second.metrics.render()).decode())
            assert value(one, "issuer_tokens_issued_total", grant="password") == 1
            assert value(one, "issuer_password_verifications_total") == 2
            assert value(one, "issuer_refresh_total", outcome="reused") == 1
            assert (
                value(
                    one,
                    "issuer_http_request_duration_seconds_bucket",
                    endpoint="/token",
                    grant="password",
                    le="0.005",
                )
                == 1
            )
            assert (
                value(
                    one,
                    "issuer_http_request_duration_seconds_bucket",
                    endpoint="/token",
                    grant="password",
                    le="0.0025",
                )
                == 0
            )
            assert value(one, "issuer_signing_keys", state="active") == 0  # nothing started: no key
            assert ("issuer_tokens_issued_total", frozenset({("grant", "password")})) not in other
            assert value(other, "issuer_password_verifications_total") == 0
            assert value(other, "issuer_refresh_total", outcome="reused") == 0
        assert not any(name.endswith("_created") for name, _ in one)
        assert b"issuer_tokens_issued" not in generate_latest(REGISTRY)
    finally:
        await first.close()
        await second.close()


# ---------------------------------------------------------------- the edge's figures, as rendered


def test_edge_figures_render_exactly_as_prometheus_instruments() -> None:
    """In one process the edge's latency, responses and tokens-issued figures are plain numbers
    (``_HttpTallies``); scraped, they must read exactly as ``prometheus_client``'s ``Histogram`` and
    ``Counter`` fed the same responses: names, help, buckets (latencies on and between the bounds,
    beyond the last), series order, values and sums."""
    prometheus_client.disable_created_metrics()  # as Metrics does, whichever test ran first
    figures = _HttpTallies()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(figures)
    reference = CollectorRegistry(auto_describe=False)
    latency = Histogram(
        "issuer_http_request_duration_seconds",
        "Request latency by endpoint and grant type.",
        ["endpoint", "grant"],
        buckets=BUCKETS,
        registry=reference,
    )
    responses = Counter(
        "issuer_http_responses",
        "Responses by endpoint and status code.",
        ["endpoint", "status"],
        registry=reference,
    )
    issued = Counter(
        "issuer_tokens_issued", "Successful token responses by grant type.", ["grant"], registry=reference
    )
    empty = generate_latest(registry)
    assert empty == generate_latest(reference)  # before any response: the families, no series
    assert b"# TYPE issuer_http_request_duration_seconds histogram" in empty
    answers = [
        ("/token", "client_credentials", 200, 0.0005),  # exactly on a bound: that bucket
        ("/token", "client_credentials", 200, 0.00050001),
        ("/token", "refresh_token", 400, 0.0031),
        ("/.well-known/jwks.json", "", 200, 0.00002),
        ("/token", "client_credentials", 401, 12.5),  # beyond the last bound: +Inf only
        ("/token", "", 415, 0.25),
        ("/.well-known/jwks.json", "", 304, 10.0),
        ("/token", "password", 200, 0.1),
        ("/revoke", "", 200, 0.049),
    ]
    for endpoint, grant, status, seconds in answers * 3:
        figures.observe(endpoint, grant, status, seconds)
        latency.labels(endpoint, grant).observe(seconds)
        responses.labels(endpoint, str(status)).inc()
        if status == 200 and grant and endpoint == "/token":
            issued.labels(grant).inc()
    rendered = generate_latest(registry)
    assert rendered == generate_latest(reference)
    samples = parse(rendered.decode())
    assert value(samples, "issuer_http_responses_total", endpoint="/token", status="200") == 9
    assert value(samples, "issuer_tokens_issued_total", grant="client_credentials") == 6
    bucket = "issuer_http_request_duration_seconds_bucket"
    assert value(samples, bucket, endpoint="/token", grant="client_credentials", le="0.0005") == 3
    assert value(samples, bucket, endpoint="/token", grant="client_credentials", le="10.0") == 6
    assert value(samples, bucket, endpoint="/token", grant="client_credentials", le="+Inf") == 9
