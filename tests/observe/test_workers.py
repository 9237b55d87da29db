"""``issuer serve --workers 2``: every worker logs JSON lines (the logging setup reaches the
spawned worker processes, and Litestar does not replace it), and ``/metrics`` answers for the
whole server: whichever worker takes the scrape, the counters are the sums over both workers
(prometheus_client's multiprocess mode, in a private directory that lives as long as the server).

Which worker answered a request is told by its ``X-Request-ID``: a generated id starts with 12 hex
digits drawn once per process (:mod:`issuer.http.observe`)."""

from __future__ import annotations

import json
import stat
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import support

LOGINS_PER_WORKER = 3  # at least this many password logins answered by each worker
SCRAPES_PER_WORKER = 3  # and this many scrapes


def worker(response: httpx.Response) -> str:
    return response.headers["x-request-id"][:12]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert "worker" not in sample.labels and "pid" not in sample.labels  # one series, summed
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


@pytest.mark.parametrize(
    "operators_directory", [False, True], ids=["private-directory", "operators-directory"]
)
def test_workers_log_json_and_answer_for_the_whole_server(
    operators_directory: bool, pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    temp = tmp_path / "tmp"  # where the server makes its metrics directory (TMPDIR)
    temp.mkdir()
    own = tmp_path / "prometheus"  # the operator's PROMETHEUS_MULTIPROC_DIR, when set
    own.mkdir()
    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_METRICS_PUBLIC="true",
        TMPDIR=str(temp),
        **key_env,
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if operators_directory:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(own)
    app = support.register_client(env, grants=("password",), scope="read")
    support.add_user(env)
    log_path = tmp_path / "server.log"
    server = support.ServerProcess(env, args=("--workers", "2", "--log-level", "info")).start(log_path)
    logins: Counter[str] = Counter()  # per worker
    keysets: Counter[str] = Counter()  # JWKS answers per worker
    scrapes: dict[str, list[dict[tuple[str, frozenset[tuple[str, str]]], float]]] = {}
    try:
        made = list(temp.glob("issuer-metrics-*"))
        if operators_directory:
            assert made == []
            directory = own
        else:
            (directory,) = made
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        login = {"grant_type": "password", "username": "alice", "password": support.PASSWORD}
        for _ in range(300):  # new connections land on either worker; stop once both served enough
            with httpx.Client() as http:
                response = http.post(server.url + "/token", auth=app, data=login)
            assert response.status_code == 200, response.text
            logins[worker(response)] += 1
            if len(logins) == 2 and min(logins.values()) >= LOGINS_PER_WORKER:
                break
        assert len(logins) == 2, logins
        for _ in range(300):  # answered by each worker's protocol at once (issuer.http.limits)
            with httpx.Client() as http:
                response = http.get(server.url + "/.well-known/jwks.json")
            assert response.status_code == 200, response.text
            keysets[worker(response)] += 1
            if len(keysets) == 2 and min(keysets.values()) >= LOGINS_PER_WORKER:
                break
        assert len(keysets) == 2, keysets
        assert {path.name.split("_")[0] for path in directory.iterdir()} >= {"counter", "histogram"}
        for _ in range(300):
            with httpx.Client() as http:
                response = http.get(server.url + "/metrics")
            assert response.status_code == 200
            scrapes.setdefault(worker(response), []).append(samples(response.text))
            if len(scrapes) == 2 and min(len(answers) for answers in scrapes.values()) >= SCRAPES_PER_WORKER:
                break
    finally:
        server.stop()
    assert len(scrapes) == 2, list(scrapes)
    issued = sum(logins.values())
    for answers in scrapes.values():
        for found in answers:
            # counted by the middleware, before the client had its answer
            assert found[("issuer_tokens_issued_total", frozenset({("grant", "password")}))] == issued
            assert (
                found[
                    (
                        "issuer_http_request_duration_seconds_count",
                        frozenset({("endpoint", "/token"), ("grant", "password")}),
                    )
                ]
                == issued
            )
            jwks = frozenset({("endpoint", "/.well-known/jwks.json"), ("status", "200")})
            assert found[("issuer_http_responses_total", jwks)] == sum(keysets.values())
            # a component's own tally (the password hasher's), carried into the counter
            assert found[("issuer_password_verifications_total", frozenset())] == issued
            # read from the database by the answering worker, not summed
            assert found[("issuer_signing_keys", frozenset({("state", "active")}))] == 1
            assert not any(name.startswith("process_") for name, _ in found)
    if operators_directory:  # used as it is, and left as it is
        assert {path.name.split("_")[0] for path in own.iterdir()} >= {"counter", "histogram"}
    else:
        assert not directory.exists()  # removed when the server exited

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, from the parent and both workers
    started = [entry for entry in entries if entry["message"].startswith("Started server process")]
    assert len(started) == 2
    access = [entry for entry in entries if entry["logger"] == "issuer.access"]
    assert all(entry["request_id"] for entry in access)
    assert {entry["path"] for entry in access} >= {"/metrics", "/token", "/.well-known/jwks.json"}


def test_an_operators_metrics_directory_must_exist(sqlite_url: str, tmp_path: Path, key_env) -> None:
    missing = tmp_path / "no-such-directory"
    env = support.issuer_env(sqlite_url, tmp_path / "keys", PROMETHEUS_MULTIPROC_DIR=str(missing), **key_env)
    result = support.run_cli(env, "serve", "--port", str(support.free_port()))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("issuer: error:")]
    assert len(errors) == 1 and "PROMETHEUS_MULTIPROC_DIR" in errors[0], result.stderr
    assert not missing.exists()
