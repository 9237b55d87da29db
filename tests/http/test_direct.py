"""The direct routes (:mod:`issuer.http.direct`) answer exactly as Litestar's handlers of the same
paths do: every kind of answer of ``POST /token`` and ``GET /.well-known/jwks.json`` is sent to the
app twice, once with the direct routes and once with every request through Litestar's router
(``create_app(direct=False)``), over one started runtime on a real SQLite file, and the two answers
must be the same: status, every header in order (the request id and the token values aside, which
differ by design) and the body. And the direct app must not have used Litestar's router for them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from litestar import Litestar

from issuer import grants
from issuer.app import create_app
from issuer.grants import TokenRequest, TokenResponse
from issuer.keys.material import KeyMaterial
from issuer.runtime import Runtime
from tests.conftest import make_settings

FORM = "application/x-www-form-urlencoded"
PASSWORD = "correct horse battery staple"
MAX_BODY = 2048


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    chunks: tuple[bytes, ...] = ()  # the body as the ASGI server hands it over, one message each
    client: str = "127.0.0.1"


async def _run(
    app: Litestar, request: Request, messages: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One request through ``app`` as uvicorn hands it over (ASGI 3): what the app sent. The body
    goes as ``request.chunks``, or as ``messages`` when given (then a disconnect once they are out)."""
    path, _, query = request.path.partition("?")
    body = b"".join(request.chunks)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers]
    if request.chunks and not any(name == b"transfer-encoding" for name, _ in headers):
        headers.append((b"content-length", str(len(body)).encode()))
    if messages is None:
        messages = [
            {"type": "http.request", "body": chunk, "more_body": i < len(request.chunks) - 1}
            for i, chunk in enumerate(request.chunks or (b"",))
        ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": (request.client, 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return sent


async def call(app: Litestar, request: Request) -> Answer:
    """One request through ``app``: the answer as sent."""
    sent = await _run(app, request)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(starts) == 1 and bodies and not bodies[-1].get("more_body", False)
    return Answer(
        starts[0]["status"], list(starts[0]["headers"]), b"".join(m.get("body", b"") for m in bodies)
    )


@dataclass(frozen=True)
class Creds:
    client_id: str
    secret: str

    @property
    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()

    @property
    def bad_basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.client_id}:wrong".encode()).decode()


@dataclass
class Pair:
    runtime: Runtime
    direct: Litestar
    routed: Litestar
    router_calls: list[str]  # the paths the direct app handed to Litestar's router
    creds: Creds

    @property
    def basic(self) -> str:
        return self.creds.basic


def _counting_router(app: Litestar, calls: list[str]) -> None:
    inner = app.asgi_handler

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await inner(scope, receive, send)

    app.asgi_handler = counted


@pytest.fixture
async def pair(sqlite_url: str, tmp_path: Path, material: KeyMaterial) -> AsyncIterator[Pair]:
    settings = make_settings(sqlite_url, tmp_path, max_body_bytes=MAX_BODY)
    runtime = Runtime(settings, material=material)
    await runtime.start()
    try:
        created = await runtime.clients.create(
            name="app",
            grant_types=["client_credentials", "password", "refresh_token"],
            scopes=["read", "write"],
        )
        await runtime.users.create("alice", PASSWORD)
        calls: list[str] = []
        direct, routed = create_app(runtime=runtime), create_app(runtime=runtime, direct=False)
        for app in (direct, routed):  # what the lifespan would set; the runtime is started once, here
            app.state.runtime = runtime
            app.state.retry_after = settings.retry_after
        _counting_router(direct, calls)
        assert created.client_secret is not None
        yield Pair(runtime, direct, routed, calls, Creds(created.client_id, created.client_secret))
    finally:
        await runtime.close()


def _normal(answer: Answer) -> tuple[int, list[tuple[bytes, bytes]], Any]:
    """Status, headers in order and body, with what differs by design masked: a generated request
    id, and each token (an access token as its JOSE header and claims but iat, exp, jti and a login's sid)."""
    headers = []
    content_type = None
    for name, value in answer.headers:
        if name == b"x-request-id" and not value.startswith(b"given-"):
            value = b"<generated>"
        if name == b"content-length":
            assert int(value) == len(answer.body)  # each framed exactly
            value = b"<length>"
        if name == b"content-type":
            content_type = value
        headers.append((name, value))
    body: Any = answer.body
    if content_type == b"application/json" and body:
        body = json.loads(body)
        for name in ("access_token", "refresh_token"):
            if name in body:
                token = body[name]
                body[name] = "<token>"
                if name == "access_token":
                    claims = jwt.decode(token, options={"verify_signature": False})
                    body["<claims>"] = {
                        k: v for k, v in claims.items() if k not in ("iat", "exp", "jti", "sid")
                    }
                    body["<header>"] = jwt.get_unverified_header(token)
    return answer.status, headers, body


async def _same(pair: Pair, request: Request) -> tuple[int, list[tuple[bytes, bytes]], Any]:
    direct = _normal(await call(pair.direct, request))
    routed = _normal(await call(pair.routed, request))
    assert direct == routed
    return direct


def _post(headers: dict[str, str], *chunks: str | bytes, path: str = "/token") -> Request:
    parts = tuple(c.encode() if isinstance(c, str) else c for c in chunks)
    return Request("POST", path, list(headers.items()), parts)


def _get(headers: dict[str, str] | None = None, path: str = "/.well-known/jwks.json") -> Request:
    return Request("GET", path, list((headers or {}).items()))


def _cases(p: Creds) -> dict[str, tuple[Request, int]]:
    f = {"Content-Type": FORM}
    auth = {**f, "Authorization": p.basic}
    cc = "grant_type=client_credentials"
    chunked = {**f, "Transfer-Encoding": "chunked"}
    return {
        "basic": (_post(auth, cc), 200),
        "basic, narrowed, a given request id": (
            _post({**auth, "X-Request-ID": "given-1"}, cc + "&scope=read"),
            200,
        ),
        "secret in the body, charset": (
            _post(
                {"Content-Type": FORM + "; charset=UTF-8"},
                f"{cc}&client_id={p.client_id}&client_secret={p.secret}",
            ),
            200,
        ),
        "the body in three messages": (_post(auth, "grant_type=", "client_", "credentials"), 200),
        "wrong secret, Basic": (_post({**f, "Authorization": p.bad_basic}, cc), 401),
        "wrong secret, body": (_post(f, f"{cc}&client_id={p.client_id}&client_secret=x"), 401),
        "other scheme": (_post({**f, "Authorization": "Bearer x"}, cc), 401),
        "two Authorization headers, the first counts": (
            Request(
                "POST",
                "/token",
                [("Content-Type", FORM), ("Authorization", p.bad_basic), ("Authorization", p.basic)],
                (cc.encode(),),
            ),
            401,
        ),
        "no content type": (_post({}, cc), 415),
        "JSON": (_post({"Content-Type": "application/json"}, "{}"), 415),
        "latin-1 form": (_post({"Content-Type": FORM + "; charset=latin-1"}, cc), 415),
        "too large by Content-Length": (_post(f, b"a=" + b"b" * MAX_BODY), 413),
        "too large as sent, no length": (
            _post(chunked, b"a=", b"b" * (MAX_BODY // 2), b"b" * (MAX_BODY // 2)),
            413,
        ),
        "chunked, within the limit": (
            _post({**chunked, "Authorization": p.basic}, "grant_type=", "client_credentials"),
            200,
        ),
        "no grant_type": (_post(auth, "scope=read"), 400),
        "unknown grant_type": (_post(auth, "grant_type=foo"), 400),
        "unknown grant_type, no client": (_post(f, "grant_type=foo"), 401),
        "a scope beyond the client's": (_post(auth, cc + "&scope=admin"), 400),
        "repeated parameter": (_post(f, "grant_type=a&grant_type=b"), 400),
        "malformed form": (_post(f, "grant_type=%zz&&"), 400),
        "not ASCII": (_post(f, "grant_type=é"), 400),
        "a NUL": (_post(f, "grant_type=a%00"), 400),
        "empty": (_post(f), 400),
        "wrong password": (_post(auth, "grant_type=password&username=alice&password=nope"), 400),
        "an Origin not registered": (_post({**auth, "Origin": "https://elsewhere.example"}, cc), 200),
        "a query string": (_post(auth, cc, path="/token?grant_type=password"), 200),
        "an insane request id": (_post({**auth, "X-Request-ID": "a b"}, cc), 200),
        "JWKS": (_get(), 200),
        "JWKS, an Origin": (_get({"Origin": "https://a"}), 200),
        "JWKS, If-None-Match: *": (_get({"If-None-Match": "*"}), 304),
        "JWKS, another ETag": (_get({"If-None-Match": '"x"'}), 200),
        "JWKS, a query string": (_get(path="/.well-known/jwks.json?a=1"), 200),
    }


async def test_every_kind_of_direct_answer_is_the_routed_one(pair: Pair) -> None:
    differ, statuses = {}, {}
    for case, (request, status) in _cases(pair.creds).items():
        direct = _normal(await call(pair.direct, request))
        routed = _normal(await call(pair.routed, request))
        if direct != routed:
            differ[case] = (direct, routed)
        statuses[case] = (direct[0], status)
    assert differ == {}
    assert {case: got for case, (got, _) in statuses.items()} == {
        case: want for case, (_, want) in statuses.items()
    }
    assert pair.router_calls == []  # the direct app answered every one without Litestar's router


async def test_a_jwks_revalidation_answers_alike(pair: Pair) -> None:
    etag = pair.runtime.keyring.jwks_etag
    for value, status in ((etag, 304), (f'"x", W/{etag}', 304), (etag[:-2] + '"', 200)):
        assert (await _same(pair, _get({"If-None-Match": value})))[0] == status
    assert pair.router_calls == []


async def test_a_rotation_and_its_replays_answer_alike(pair: Pair) -> None:
    # a login, its rotation, the same replayed at once from the same address (the grace window's
    # successor) and from another (reuse: the family is revoked), then the successor: refused
    form = {"Content-Type": FORM, "Authorization": pair.basic}
    answers = []
    for app in (pair.direct, pair.routed):
        login = await call(app, _post(form, f"grant_type=password&username=alice&password={PASSWORD}"))
        first = json.loads(login.body)["refresh_token"]
        rotate = _post(form, f"grant_type=refresh_token&refresh_token={first}")
        rotation = await call(app, rotate)
        grace = await call(app, rotate)
        reuse = await call(app, dataclasses.replace(rotate, client="192.0.2.1"))
        successor = json.loads(rotation.body)["refresh_token"]
        after = await call(app, _post(form, f"grant_type=refresh_token&refresh_token={successor}"))
        assert json.loads(grace.body)["refresh_token"] == successor
        answers.append([_normal(r) for r in (login, rotation, grace, reuse, after)])
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0]] == [200, 200, 200, 400, 400]
    assert answers[0][3][2]["error"] == answers[0][4][2]["error"] == "invalid_grant"
    assert pair.router_calls == []


async def test_a_bug_is_a_500_with_its_traceback_logged_on_both(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(context: Any, request: TokenRequest) -> TokenResponse:
        raise RuntimeError("a bug")

    monkeypatch.setitem(grants.REGISTRY, "client_credentials", broken)
    with caplog.at_level(logging.ERROR, logger="issuer.http"):
        status, _, body = await _same(
            pair, _post({"Content-Type": FORM, "Authorization": pair.basic}, "grant_type=client_credentials")
        )
    assert (status, body) == (500, {"error": "server_error", "error_description": "internal error"})
    bugs = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert len(bugs) == 2 and all(r.exc_info and "a bug" in str(r.exc_info[1]) for r in bugs)


async def test_other_methods_and_paths_are_litestars(pair: Pair) -> None:
    # OPTIONS (the preflight), the 405s and /token/ are the router's, on the direct app as on the other
    requests = [
        _get(path="/token"),
        Request("OPTIONS", "/token", [("Origin", "https://a"), ("Access-Control-Request-Method", "POST")]),
        Request("HEAD", "/.well-known/jwks.json", []),
        _post({}, path="/.well-known/jwks.json"),
        _post(
            {"Content-Type": FORM, "Authorization": pair.basic},
            "grant_type=client_credentials",
            path="/token/",
        ),
    ]
    statuses = [(await _same(pair, request))[0] for request in requests]
    assert statuses == [405, 204, 405, 405, 200]
    assert pair.router_calls == [
        "/token",
        "/token",
        "/.well-known/jwks.json",
        "/.well-known/jwks.json",
        "/token/",
    ]


async def test_a_direct_answer_is_counted_and_logged_like_a_routed_one(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    form = {"Content-Type": FORM, "Authorization": pair.basic, "X-Request-ID": "given-7"}
    with caplog.at_level(logging.INFO, logger="issuer.access"):
        await _same(pair, _post(form, "grant_type=client_credentials"))
    lines = [r for r in caplog.records if r.name == "issuer.access"]
    assert len(lines) == 2
    fields = [{k: getattr(r, k) for k in ("method", "path", "status", "grant")} for r in lines]
    assert (
        fields[0]
        == fields[1]
        == {
            "method": "POST",
            "path": "/token",
            "status": 200,
            "grant": "client_credentials",
        }
    )
    rendered = (await pair.runtime.metrics.render()).decode()
    counted = [
        line
        for line in rendered.splitlines()
        if line.startswith("issuer_http_responses_total{")
        and 'endpoint="/token"' in line
        and 'status="200"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == 2.0


async def test_a_client_gone_before_its_body_ends_gets_nothing_and_no_traceback(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    request = _post({"Content-Type": FORM, "Authorization": pair.basic, "Transfer-Encoding": "chunked"})
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"grant_type=", "more_body": True},
        {"type": "http.disconnect"},
    ]
    with caplog.at_level(logging.INFO):
        sent = await _run(pair.direct, request, messages)
    assert sent == [] and messages == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
