"""Every way a client can get ``POST /token`` wrong: a clear RFC 6749 5.2 error, never a 500.

One server for the module (SQLite); each row sends one bad request and names the status and
error code it must get. Every answer must be JSON ``{"error", "error_description"}`` with
``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from issuer import migrations
from tests import support

PASSWORD = support.PASSWORD
FORM = "application/x-www-form-urlencoded"


@dataclass
class Live:
    url: str
    client_id: str
    secret: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("token-errors")
    db = f"sqlite:///{tmp / 'issuer.db'}"
    migrations.upgrade(db)
    env = support.issuer_env(db, tmp / "keys", ISSUER_MAX_BODY_BYTES="4096")
    client_id, secret = support.register_client(env)
    support.add_user(env)
    with support.running_server(env, tmp / "server.log") as proc:
        yield Live(proc.url, client_id, secret, env)


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes | str
    status: int
    error: str
    content_type: str | None = FORM
    auth: str = "basic"  # basic | none | raw header value
    method: str = "POST"
    www_authenticate: bool = False


CASES = [
    Case(
        "a JSON body is refused",
        '{"grant_type": "client_credentials"}',
        415,
        "invalid_request",
        content_type="application/json",
    ),
    Case(
        "a body without a content type is refused",
        "grant_type=client_credentials",
        415,
        "invalid_request",
        content_type=None,
    ),
    Case(
        "multipart is refused",
        "grant_type=client_credentials",
        415,
        "invalid_request",
        content_type="multipart/form-data; boundary=x",
    ),
    Case(
        "a charset other than UTF-8 is refused",
        "grant_type=client_credentials",
        415,
        "invalid_request",
        content_type=FORM + "; charset=latin-1",
    ),
    Case(
        "charset=UTF-8 is accepted",
        "grant_type=client_credentials",
        200,
        "",
        content_type=FORM + "; charset=UTF-8",
    ),
    Case(
        "a repeated grant_type is refused",
        "grant_type=client_credentials&grant_type=password",
        400,
        "invalid_request",
    ),
    Case(
        "a repeated scope is refused",
        "grant_type=client_credentials&scope=read&scope=write",
        400,
        "invalid_request",
    ),
    Case(
        "a repeated empty parameter is refused",
        "grant_type=client_credentials&scope=&scope=",
        400,
        "invalid_request",
    ),
    Case(
        "an oversized body is refused",
        "grant_type=client_credentials&scope=" + "a" * 5000,
        413,
        "invalid_request",
    ),
    Case("an unknown grant type is refused", "grant_type=urn:example:magic", 400, "unsupported_grant_type"),
    Case(
        "the implicit/authorization_code grant is not offered",
        "grant_type=authorization_code&code=x",
        400,
        "unsupported_grant_type",
    ),
    Case("a missing grant_type is refused", "scope=read", 400, "invalid_request"),
    Case("an empty body is refused", "", 400, "invalid_request"),
    Case(
        "raw non-UTF-8 bytes are refused",
        b"grant_type=client_credentials&scope=\xff\xfe",
        400,
        "invalid_request",
    ),
    Case(
        "percent-encoded invalid UTF-8 is refused",
        "grant_type=client_credentials&scope=%ff",
        400,
        "invalid_request",
    ),
    Case("a parameter without '=' is refused", "grant_type", 400, "invalid_request"),
    Case("an empty pair is refused", "grant_type=client_credentials&&scope=read", 400, "invalid_request"),
    Case(
        "too many parameters are refused",
        "grant_type=client_credentials&" + "&".join(f"p{i}=1" for i in range(40)),
        400,
        "invalid_request",
    ),
    Case("a malformed scope is refused", "grant_type=client_credentials&scope=read%22", 400, "invalid_scope"),
    Case(
        "a scope beyond the client's is refused",
        "grant_type=client_credentials&scope=admin",
        400,
        "invalid_scope",
    ),
    Case("password without username is refused", "grant_type=password&password=x", 400, "invalid_request"),
    Case("refresh without a token is refused", "grant_type=refresh_token", 400, "invalid_request"),
    Case(
        "a garbage refresh token is invalid_grant",
        "grant_type=refresh_token&refresh_token=irt_nope",
        400,
        "invalid_grant",
    ),
    Case(
        "an unknown well-formed refresh token is invalid_grant",
        "grant_type=refresh_token&refresh_token=irt_" + "A" * 43,
        400,
        "invalid_grant",
    ),
    Case(
        "no client authentication is invalid_client",
        "grant_type=client_credentials",
        401,
        "invalid_client",
        auth="none",
        www_authenticate=True,
    ),
    Case(
        "a wrong Basic secret is invalid_client with a challenge",
        "grant_type=client_credentials",
        401,
        "invalid_client",
        auth="Basic " + base64.b64encode(b"cli_x:nope").decode(),
        www_authenticate=True,
    ),
    Case(
        "malformed Basic base64 is invalid_client",
        "grant_type=client_credentials",
        401,
        "invalid_client",
        auth="Basic %%%not-base64",
        www_authenticate=True,
    ),
    Case(
        "non-UTF-8 Basic credentials are invalid_client",
        "grant_type=client_credentials",
        401,
        "invalid_client",
        auth="Basic " + base64.b64encode(b"\xff\xfe:\xfa").decode(),
        www_authenticate=True,
    ),
    Case(
        "a Bearer scheme is invalid_client",
        "grant_type=client_credentials",
        401,
        "invalid_client",
        auth="Bearer abc",
        www_authenticate=True,
    ),
    Case(
        "an unknown client via post is invalid_client without a challenge",
        "grant_type=client_credentials&client_id=cli_nobody&client_secret=x",
        401,
        "invalid_client",
        auth="none",
    ),
    Case("a GET is refused", "", 405, "invalid_request", method="GET", content_type=None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_token_requests(live: Live, case: Case) -> None:
    headers = {}
    if case.content_type:
        headers["Content-Type"] = case.content_type
    if case.auth == "basic":
        headers["Authorization"] = live.basic
    elif case.auth != "none":
        headers["Authorization"] = case.auth
    content = case.body.encode() if isinstance(case.body, str) else case.body
    response = httpx.request(case.method, live.url + "/token", content=content or None, headers=headers)
    assert response.status_code == case.status, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    if case.status == 200:
        assert body["token_type"] == "Bearer"
        return
    assert body["error"] == case.error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert ("www-authenticate" in response.headers) == case.www_authenticate
    if case.www_authenticate:
        assert response.headers["www-authenticate"].startswith("Basic ")


def test_two_authentication_methods_at_once_are_refused(live: Live) -> None:
    response = httpx.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "client_secret": live.secret},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_a_body_client_id_that_contradicts_basic_is_refused(live: Live) -> None:
    response = httpx.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "client_id": "cli_someone_else"},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_a_matching_body_client_id_with_basic_is_fine(live: Live) -> None:
    response = httpx.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "client_id": live.client_id},
    )
    assert response.status_code == 200, response.text


def test_empty_parameters_count_as_omitted(live: Live) -> None:
    # RFC 6749 3.1: parameters sent without a value are treated as if omitted: scope= means the default.
    response = httpx.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "scope": ""},
    )
    assert response.status_code == 200 and response.json()["scope"] == "read write"


def test_a_refused_refresh_loses_nothing(live: Live) -> None:
    login = httpx.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
    ).json()
    for bad in ({"scope": "admin"}, {"scope": 'bad"scope'}):
        refused = httpx.post(
            live.url + "/token",
            headers={"Authorization": live.basic},
            data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"], **bad},
        )
        assert refused.json()["error"] == "invalid_scope"
    ok = httpx.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]},
    )
    assert ok.status_code == 200, ok.text


def test_unknown_paths_are_json_404(live: Live) -> None:
    response = httpx.get(live.url + "/nope")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
