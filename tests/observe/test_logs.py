"""Structured logs: every line of a real server's log is one JSON object, requests carry an id
(echoed, honoured when sane), and no secret the scenario used appears anywhere in the log.

The scenario runs ``issuer serve --log-level debug`` (more than the default ``info``) on SQLite with
Redis through every endpoint, good and bad requests alike, then greps the log for each client secret,
password, refresh token, access token, the key-encryption and HMAC keys and the metrics token,
raw and form-encoded.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from issuer.observability.logs import JsonFormatter, RequestContext, current, scrub
from tests import support

PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "p@ss w0rd & more=stuff"
METRICS_TOKEN = "mt-" + "Qw3rTy7UiOp9AsDf"
_CIPHERTEXT = bytes.fromhex("9f3c1a") + bytes(range(256))[7:170]  # 166 bytes, like an ES256 key's
_TRUNCATED = repr(_CIPHERTEXT)[:150] + " ... (300 characters truncated) ... " + repr(_CIPHERTEXT)[-150:]


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
    other = _client(env, tmp_path, "client_credentials", "password", "refresh_token")
    introspector = _client(env, tmp_path, "client_credentials", introspect=True)
    for username, password in (("alice", PASSWORD), ("bob", BOB_PASSWORD)):
        created = support.run_cli_here(env, "users", "create", "--username", username, input=password + "\n")
        assert created.returncode == 0, created.stderr
    secrets: set[str] = {app[1], other[1], introspector[1], PASSWORD, BOB_PASSWORD, METRICS_TOKEN}
    secrets.update(key_env.values())

    log_path = tmp_path / "server.log"
    server = support.ServerProcess(env, args=("--log-level", "debug")).start(log_path)
    try:
        url = server.url

        def post(path: str, auth: tuple[str, str] | None = None, **kwargs: object) -> httpx.Response:
            response = support.post(url + path, auth=auth, **kwargs)  # type: ignore[arg-type]
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
        foreign = post("/token", other, data=stolen)  # RFC 6749 6: bound to the client it was issued to
        assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_grant"
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
        scraped = support.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.status_code == 200
        sane = support.get(url + "/.well-known/jwks.json", headers={"X-Request-ID": "trace-42.a:b_c"})
        assert sane.headers["x-request-id"] == "trace-42.a:b_c"
        for insane in ("has space", "x" * 101, "semi;colon", app[1]):
            echoed = support.get(url + "/.well-known/jwks.json", headers={"X-Request-ID": insane})
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


# ---------------------------------------------------------------- what the database holds


def _stored_secrets(database_url: str) -> tuple[list[str], list[bytes]]:
    """The users' argon2id hashes and the signing keys' encrypted private keys, as stored."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            hashes = [row[0] for row in conn.execute("SELECT password_hash FROM users")]
            keys = [bytes(row[0]) for row in conn.execute("SELECT private_key FROM signing_keys")]
        return hashes, keys
    import psycopg

    with psycopg.connect(database_url) as conn:
        hashes = [row[0] for row in conn.execute("SELECT password_hash FROM users")]
        keys = [bytes(row[0]) for row in conn.execute("SELECT private_key FROM signing_keys")]
    return hashes, keys


def _encodings(raw: bytes) -> list[str]:
    """Every way a driver or SQLAlchemy might print bytes: hex in either case (PostgreSQL's
    ``bytea`` output is hex), the repr of bytes, standard and URL-safe base64."""
    return [
        raw.hex(),
        raw.hex().upper(),
        repr(raw)[2:-1],
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
    ]


def _windows(text: str, size: int = 24) -> set[str]:
    """Every ``size``-character slice of ``text`` (a truncated print shows only part of a value)."""
    return {text[i : i + size] for i in range(0, max(1, len(text) - size + 1))}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("libraries", [None, "debug"], ids=["libraries quiet", "--log-libraries debug"])
def test_debug_logs_hold_no_password_hash_or_key_ciphertext(
    database_url: str, tmp_path: Path, key_env: dict[str, str], libraries: str | None
) -> None:
    """Issue 14, point 7: at ``--log-level debug`` the database driver's loggers (SQL parameters
    and result rows) stay at warning; asked to speak (``--log-libraries debug``), what they print
    is scrubbed of password hashes and key ciphertext in every encoding."""
    env = support.issuer_env(database_url, tmp_path / "keys", **key_env)
    app = _client(env, tmp_path, "client_credentials", "password", "refresh_token")
    support.add_user(env, "alice", PASSWORD)
    args = ("--log-level", "debug", *(("--log-libraries", libraries) if libraries else ()))
    log_path = tmp_path / "server.log"
    # The server hashes at another cost than `users create` did, so each login rehashes the
    # password and writes the new hash (and the server generates a signing key at start).
    server_env = {**env, "ISSUER_PASSWORD_HASH_TIME_COST": "2"}
    server = support.ServerProcess(server_env, args=args).start(log_path)
    try:
        login = {"grant_type": "password", "username": "alice", "password": PASSWORD}
        assert support.post(server.url + "/token", auth=app, data=login).status_code == 200
        support.add_user(env, "carol", BOB_PASSWORD)  # a user created while the server runs
        login = {"grant_type": "password", "username": "carol", "password": BOB_PASSWORD}
        assert support.post(server.url + "/token", auth=app, data=login).status_code == 200
        assert support.get(server.url + "/.well-known/jwks.json").status_code == 200
    finally:
        server.stop()

    text = log_path.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    decoded = "\n".join(s for entry in entries for s in _strings(entry))
    hashes, keys = _stored_secrets(database_url)
    assert len(hashes) == 2 and all(h.startswith("$argon2id$v=19$m=8192,t=2,") for h in hashes) and keys
    for password_hash in hashes:
        salt, digest = password_hash.split("$")[-2:]
        for needle in (password_hash, salt, digest):
            assert needle not in text and needle not in decoded, "a password hash is in the log"
    for ciphertext in keys:
        for encoding in _encodings(ciphertext):
            for window in _windows(encoding):
                assert window not in text and window not in decoded, "key ciphertext is in the log"
    if libraries:  # the libraries did speak: the test saw what the filter had to scrub
        assert any(entry["logger"].startswith("sqlalchemy") for entry in entries)
    else:
        assert not any(
            entry["logger"].startswith(("sqlalchemy", "aiosqlite", "asyncpg", "alembic"))
            and entry["level"] in ("debug", "info")
            for entry in entries
        )


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
        # password hashes, as a driver prints them among a statement's parameters
        ("('$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaA', 1)", "aGFzaGhhc2hoYXNoaA"),
        ("('$argon2i$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo',)", "aGFzaGhhc2hoYXNo"),
        ("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", "PgBkqquzi.Ss7KIUgO2t0jWMUW"),
        ("$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdE", "nFNh2CVHVjNld"),
        ("pbkdf2_sha256$600000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA=", "aGFzaGhhc2hoYXNoaGFzaA"),
        ("$pbkdf2-sha256$29000$N2YuJSPkfE/g$aGFzaGhhc2hoYXNoaGFzaA", "aGFzaGhhc2hoYXNoaGFzaA"),
        # key ciphertext (nonce || AES-GCM of a PKCS#8 key) in each way bytes get printed
        (repr(_CIPHERTEXT), repr(_CIPHERTEXT)[2:26]),
        (_TRUNCATED, repr(_CIPHERTEXT)[-30:-2]),  # as SQLAlchemy prints a long parameter
        (_CIPHERTEXT.hex(), _CIPHERTEXT.hex()[:24]),
        ("\\x" + _CIPHERTEXT.hex().upper(), _CIPHERTEXT.hex().upper()[:24]),
        (base64.b64encode(_CIPHERTEXT).decode(), base64.b64encode(_CIPHERTEXT).decode()[:24]),
        (base64.urlsafe_b64encode(_CIPHERTEXT).decode(), base64.urlsafe_b64encode(_CIPHERTEXT).decode()[:24]),
    ],
)
def test_credential_shapes_are_scrubbed_from_messages_values_and_tracebacks(text: str, secret: str) -> None:
    entry = _format({"msg": "saw %s", "args": (text,)}, extra={"detail": [text], "nested": {"x": text}})
    assert secret not in json.dumps(entry)
    assert "[redacted]" in entry["message"]
    assert secret not in scrub(text)
    failed = _format({"msg": "failed"}, exc=True)
    assert "BBBB" not in failed["exception"] and "ValueError" in failed["exception"]


@pytest.mark.parametrize(
    "text",
    [
        "key ring reloaded: kid EPXwTf22wEfF8DZJHOiulWggeAco9Kc9zI1mPsKBfw8",  # RFC 7638 thumbprint
        "/tmp/pytest-of-root/pytest-12/test_debug_logs_hold_no_passwo0/keys/kek is readable by others",
        "kek id 4dfe13e7b754fa00, request 1a2b3c4d5e6f000000000001",
    ],
)
def test_ids_and_paths_are_not_mistaken_for_secrets(text: str) -> None:
    assert scrub(text) == text


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
