"""The published OpenAPI document against a live server, by schemathesis (issue 13 item 3).

One ``issuer serve`` on PostgreSQL (where a NUL in text is an error, not a value) and Redis.
schemathesis reads ``GET /openapi.json`` and, for every documented operation, sends a bounded,
derandomized set of generated requests (valid and invalid per the document), half of them
authenticated with HTTP Basic as a client that may use every endpoint. Each answer must be no
5xx, a status the document lists for the operation, the content type it documents, a body that
matches its schema (every error is ``{"error", "error_description"}`` JSON), and the headers it
documents; and the server must log no traceback.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import support

EXAMPLES = 30  # per operation (valid and invalid requests mixed); 7 operations
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class Live:
    def __init__(self, url: str, authorization: str) -> None:
        self.url = url
        self.authorization = authorization


@pytest.fixture(scope="module")
def fuzz_live(pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-openapi")
    name, db = support.pg_clone(pg_template)
    prefix = f"issuer-test:{os.getpid()}:{secrets.token_hex(4)}:"
    try:
        env = support.issuer_env(
            db, tmp / "keys", ISSUER_REDIS_URL=support.REDIS_URL, ISSUER_REDIS_PREFIX=prefix
        )
        client_id, secret = support.register_client(env, "--can-introspect")
        support.add_user(env)
        with support.running_server(env, tmp / "server.log") as proc:
            basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
            yield Live(proc.url, basic)
            assert "Traceback" not in proc.log(), proc.log()[-4000:]
    finally:
        support.pg_drop(name)
        client = redis.Redis.from_url(support.REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_live: Live) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fuzz_live.url + "/openapi.json")


OPERATIONS = [
    ("POST", "/token"),
    ("POST", "/revoke"),
    ("POST", "/introspect"),
    ("GET", "/revocations"),
    ("POST", "/revocations"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_openapi_document_holds_for_generated_requests(
    api_schema: schemathesis.BaseSchema, fuzz_live: Live, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(case=cases, basic=st.booleans())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case, basic: bool) -> None:
        headers = {"Authorization": fuzz_live.authorization} if basic else None
        case.call_and_validate(base_url=fuzz_live.url, headers=headers, checks=CHECKS)

    check()


def test_the_document_covers_the_public_surface(fuzz_live: Live) -> None:
    document = support.get(fuzz_live.url + "/openapi.json").json()
    assert set(document["paths"]) == {
        "/token",
        "/revoke",
        "/introspect",
        "/revocations",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    }
    token = document["paths"]["/token"]["post"]
    assert set(token["requestBody"]["content"]) == {"application/x-www-form-urlencoded"}
    assert {"200", "400", "401", "413", "415", "429", "503"} <= set(token["responses"])
    assert document["components"]["securitySchemes"]["client_secret_basic"] == {
        "type": "http",
        "scheme": "basic",
        "description": "RFC 6749 2.3.1: form-urlencoded client_id and client_secret, then Basic",
    }
