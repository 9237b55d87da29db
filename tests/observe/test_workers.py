"""``issuer serve --workers 2``: every worker logs JSON lines (the logging setup reaches the
spawned worker processes, and Litestar does not replace it), and each worker answers ``/metrics``
with its own registry, told apart by the ``worker`` label."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests import support


def test_workers_log_json_and_label_their_metrics(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_METRICS_PUBLIC="true",
        **key_env,
    )
    log_path = tmp_path / "server.log"
    server = support.ServerProcess(env, args=("--workers", "2", "--log-level", "info")).start(log_path)
    workers: set[str] = set()
    try:
        for _ in range(60):  # new connections land on either worker; stop once both answered
            with httpx.Client() as http:
                text = http.get(server.url + "/metrics").text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "issuer_http_responses_total":
                        workers.add(sample.labels["worker"])
            if len(workers) == 2:
                break
    finally:
        server.stop()
    assert len(workers) == 2 and all(worker.isdigit() for worker in workers)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, from the parent and both workers
    started = [entry for entry in entries if entry["message"].startswith("Started server process")]
    assert len(started) == 2
    access = [entry for entry in entries if entry["logger"] == "issuer.access"]
    assert all(entry["request_id"] for entry in access)
    assert {entry["path"] for entry in access} >= {"/metrics"}
