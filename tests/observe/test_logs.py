"""Structured logs: every line of a real server's log is one JSON object, requests carry an id
(echoed, honoured when sane), and no secret the scenario used appears anywhere in the log.

The scenario runs ``issuer serve --log-level debug`` (more than the default ``info``) on SQLite with
Redis through every endpoint, good and bad requests alike, then greps the log for each client secret,
password, refresh token, access token, the key-encryption and HMAC keys and the metrics token,
raw and form-encoded.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from issuer.logs import JsonFormatter, RequestContext, current, scrub
from tests import support

PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "p@ss w0rd & more=stuff"
METRICS_TOKEN = "mt-" + "Qw3rTy7UiOp9AsDf"


def _client(env: dict[str, str], cwd: Path, *grants: str, introspect: bool = False) -> tuple[str, str]:
    extra = ("--can-introspect",) if introspect else ()
    return support.register_client(env, *extra, grants=grants, scope="read write")


def test_a_full_scenario_logs_json_lines_and_no_secret(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str], redis_prefix: str
) -> None:
    env = support.issuer_env(
        sqlite_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_METRICS_TOKEN=METRICS_TOKEN,
        ISSUER_RATE_LIMIT_PASSWORD="6",
        **key_env,
    )
    app = _client(env, tmp_path, "client_credentials", "password", "refresh_token")
    other = _client(env, tmp_path, "client_credentials")
    introspector = _client(env, tmp_path, "client_credentials", introspect=True)
    for username, password in (("alice", PASSWORD), ("bob", BOB_PASSWORD)):
        created = support.run_cli(env, "users", "create", "--username", username, input=password + "\n")
        assert created.returncode == 0, created.stderr
    secrets: set[str] = {app[1], other[1], introspector[1], PASSWORD, BOB_PASSWORD, METRICS_TOKEN}
    secrets.update(key_env.values())

    log_path = tmp_path / "server.log"
    server = support.ServerProcess(env, args=("--log-level", "debug")).start(log_path)
    try:
        url = server.url

        def post(path: str, auth: tuple[str, str] | None = None, **kwargs: object) -> httpx.Response:
            response = httpx.post(url + path, auth=auth, **kwargs)  # type: ignore[arg-type]
            if response.content and response.headers.get("content-type", "").startswith("application/json"):
                body = response.json()
                for name in ("access_token", "refresh_token"):
                    if isinstance(body, dict) and body.get(name):
                        secrets.add(body[name])
            return response

        # client credentials, both authentication methods
        assert post("/token", app, data={"grant_type": "client_credentials"}).status_code == 200
        cc_post = {"grant_type": "client_credentials", "client_id": other[0], "client_secret": other[1]}
        assert post("/token", data=cc_post).status_code == 200
        # password logins (good, wrong, unknown user), a password with form-special characters
        login = post(
            "/token", app, data={"grant_type": "password", "username": "alice", "password": PASSWORD}
        )
        assert login.status_code == 200
        bob = post(
            "/token", app, data={"grant_type": "password", "username": "bob", "password": BOB_PASSWORD}
        )
        assert bob.status_code == 200
        wrong = {"grant_type": "password", "username": "alice", "password": PASSWORD + "!"}
        secrets.add(PASSWORD + "!")
        assert post("/token", app, data=wrong).status_code == 400
        unknown = {"grant_type": "password", "username": "nobody", "password": "some guessed password"}
        secrets.add("some guessed password")
        assert post("/token", app, data=unknown).status_code == 400
        # refresh, grace-window replay, reuse detection
        first = login.json()["refresh_token"]
        second = post("/token", app, data={"grant_type": "refresh_token", "refresh_token": first})
        assert second.status_code == 200
        assert (
            post("/token", app, data={"grant_type": "refresh_token", "refresh_token": first}).status_code
            == 200
        )
        third = post(
            "/token",
            app,
            data={"grant_type": "refresh_token", "refresh_token": second.json()["refresh_token"]},
        )
        assert third.status_code == 200
        reuse = post("/token", app, data={"grant_type": "refresh_token", "refresh_token": first})
        assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
        # a refresh token of another client, an unknown one
        stolen = {"grant_type": "refresh_token", "refresh_token": bob.json()["refresh_token"]}
        assert post("/token", other, data=stolen).status_code in (400, 401)
        made_up = "irt_" + "A" * 43
        secrets.add(made_up)
        assert (
            post("/token", app, data={"grant_type": "refresh_token", "refresh_token": made_up}).status_code
            == 400
        )
        # introspection and revocation
        access = bob.json()["access_token"]
        assert post("/introspect", introspector, data={"token": access}).json()["active"] is True
        assert (
            post("/introspect", introspector, data={"token": bob.json()["refresh_token"]}).status_code == 200
        )
        assert post("/revoke", app, data={"token": bob.json()["refresh_token"]}).status_code == 200
        assert (
            post("/revoke", app, data={"token": access, "token_type_hint": "access_token"}).status_code == 200
        )
        assert post("/introspect", introspector, data={"token": access}).json() == {"active": False}
        assert post("/introspect", app, data={"token": access}).status_code == 403  # not an introspector
        # bad requests: wrong secret, malformed Basic, two methods, repeated and missing parameters,
        # an unsupported grant, a wrong content type, a body too large, a bearer token on /token
        wrong_secret = app[1][:-4] + "AAAA"
        secrets.add(wrong_secret)
        assert (
            post("/token", (app[0], wrong_secret), data={"grant_type": "client_credentials"}).status_code
            == 401
        )
        garbage = {"Authorization": "Basic !!!not-base64" + app[1]}
        assert post("/token", headers=garbage, data={"grant_type": "client_credentials"}).status_code == 401
        both = {"grant_type": "client_credentials", "client_secret": app[1]}
        assert post("/token", app, data=both).status_code == 400
        repeated = f"grant_type=password&username=alice&password={quote_plus(PASSWORD)}&password=x"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert post("/token", app, content=repeated, headers=form).status_code == 400
        assert post("/token", app, data={"username": "alice", "password": PASSWORD}).status_code == 400
        assert post("/token", app, data={"grant_type": "urn:x:" + PASSWORD}).status_code == 400
        as_json = json.dumps({"grant_type": "password", "password": PASSWORD})
        assert (
            post("/token", app, content=as_json, headers={"Content-Type": "application/json"}).status_code
            == 415
        )
        huge = {"grant_type": "password", "username": "alice", "password": PASSWORD + "x" * 20000}
        assert post("/token", app, data=huge).status_code == 413
        bearer = {"Authorization": f"Bearer {access}"}
        assert post("/token", headers=bearer, data={"grant_type": "client_credentials"}).status_code == 401
        for _ in range(6):  # the password limit (6 per window) for alice: 429 at last
            last = post(
                "/token", app, data={"grant_type": "password", "username": "alice", "password": PASSWORD}
            )
        assert last.status_code == 429
        # metrics with its token; request ids: sane ones honoured, others replaced
        scraped = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.status_code == 200
        sane = httpx.get(url + "/.well-known/jwks.json", headers={"X-Request-ID": "trace-42.a:b_c"})
        assert sane.headers["x-request-id"] == "trace-42.a:b_c"
        for insane in ("has space", "x" * 101, "semi;colon", app[1]):
            echoed = httpx.get(url + "/.well-known/jwks.json", headers={"X-Request-ID": insane})
            assert echoed.headers["x-request-id"] != insane
            assert re.fullmatch(r"[0-9a-f]{24}", echoed.headers["x-request-id"])
    finally:
        server.stop()

    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(entry, dict) for entry in entries)
    for entry in entries:
        assert {"ts", "level", "logger", "message"} <= entry.keys()
    access_lines = [entry for entry in entries if entry["logger"] == "issuer.access"]
    assert len(access_lines) >= 40
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]{1,100}", entry["request_id"]) for entry in access_lines)
    assert len({entry["request_id"] for entry in access_lines}) == len(access_lines)  # one id each
    assert any(entry.get("request_id") == "trace-42.a:b_c" for entry in access_lines)
    token_lines = [entry for entry in access_lines if entry["path"] == "/token" and entry["status"] == 200]
    assert token_lines and all(entry.get("client_id") in (app[0], other[0]) for entry in token_lines)
    assert {"client_credentials", "password", "refresh_token"} <= {
        entry.get("grant") for entry in token_lines
    }
    assert any(entry["status"] == 429 for entry in access_lines)
    assert any(
        entry["level"] in ("info", "warning") and entry["logger"] != "issuer.access" for entry in entries
    )

    assert len(secrets) >= 20
    for secret in secrets:
        for form in {secret, quote_plus(secret), quote(secret, safe="")}:
            assert form not in text, f"a secret ({len(secret)} characters) is in the server log"


# ---------------------------------------------------------------- the formatter itself


def _format(
    record_kwargs: dict[str, object], *, extra: dict[str, object] | None = None, exc: bool = False
) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("issuer.test-logs")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        if exc:
            try:
                raise ValueError("refresh_token=irt_" + "B" * 43 + " was bad")
            except ValueError:
                logger.exception(record_kwargs["msg"], *record_kwargs.get("args", ()), extra=extra)  # type: ignore[arg-type]
        else:
            logger.info(record_kwargs["msg"], *record_kwargs.get("args", ()), extra=extra)  # type: ignore[arg-type]
    finally:
        logger.handlers = []
    return json.loads(stream.getvalue())


@pytest.mark.parametrize(
    "field",
    [
        "password",
        "client_secret",
        "refresh_token",
        "access_token",
        "authorization",
        "Cookie",
        "kek",
        "hmac_key",
        "token",
    ],
)
def test_fields_named_like_secrets_are_dropped_whatever_their_value(field: str) -> None:
    entry = _format({"msg": "event"}, extra={field: "harmless-looking-value", "kind": "sid"})
    assert field not in entry and "harmless-looking-value" not in json.dumps(entry)
    assert entry["kind"] == "sid"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("irt_" + "C" * 43, "C" * 43),
        ("ics_" + "D" * 43, "D" * 43),
        ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJzdWIiOiJ4In0"),
        ("Bearer abc.def-ghi", "abc.def-ghi"),
        ("Basic Y2xpOnNlY3JldA==", "Y2xpOnNlY3JldA"),
        ("password=hunter2hunter2", "hunter2hunter2"),
        ("client_secret: 's3cr3t-value'", "s3cr3t-value"),
        ("{'refresh_token': 'opaque-value'}", "opaque-value"),
    ],
)
def test_credential_shapes_are_scrubbed_from_messages_values_and_tracebacks(text: str, secret: str) -> None:
    entry = _format({"msg": "saw %s", "args": (text,)}, extra={"detail": [text], "nested": {"x": text}})
    assert secret not in json.dumps(entry)
    assert "[redacted]" in entry["message"]
    assert secret not in scrub(text)
    failed = _format({"msg": "failed"}, exc=True)
    assert "BBBB" not in failed["exception"] and "ValueError" in failed["exception"]


def test_lines_carry_the_request_and_client_of_the_request_being_served() -> None:
    context = RequestContext("req-1")
    context.client_id = "cli_abc"
    token = current.set(context)
    try:
        entry = _format({"msg": "inside"}, extra={"count": 3, "ratio": 0.5, "ok": True, "none": None})
    finally:
        current.reset(token)
    assert entry["request_id"] == "req-1" and entry["client_id"] == "cli_abc"
    assert (entry["count"], entry["ratio"], entry["ok"], entry["none"]) == (3, 0.5, True, None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]) and entry["level"] == "info"
    outside = _format({"msg": "outside"})
    assert "request_id" not in outside and "client_id" not in outside
