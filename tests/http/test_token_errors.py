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

from issuer.store import migrations
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
        "authorization_code by a client not registered for it is unauthorized_client",
        "grant_type=authorization_code&code=x",
        400,
        "unauthorized_client",
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
    response = support.request(case.method, live.url + "/token", content=content or None, headers=headers)
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
    response = support.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "client_secret": live.secret},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_a_body_client_id_that_contradicts_basic_is_refused(live: Live) -> None:
    response = support.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "client_id": "cli_someone_else"},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_a_matching_body_client_id_with_basic_is_fine(live: Live) -> None:
    response = support.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "client_id": live.client_id},
    )
    assert response.status_code == 200, response.text


def test_empty_parameters_count_as_omitted(live: Live) -> None:
    # RFC 6749 3.1: parameters sent without a value are treated as if omitted: scope= means the default.
    response = support.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "client_credentials", "scope": ""},
    )
    assert response.status_code == 200 and response.json()["scope"] == "read write"


def test_a_refused_refresh_loses_nothing(live: Live) -> None:
    login = support.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
    ).json()
    for bad in ({"scope": "admin"}, {"scope": 'bad"scope'}):
        refused = support.post(
            live.url + "/token",
            headers={"Authorization": live.basic},
            data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"], **bad},
        )
        assert refused.json()["error"] == "invalid_scope"
    ok = support.post(
        live.url + "/token",
        headers={"Authorization": live.basic},
        data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]},
    )
    assert ok.status_code == 200, ok.text


def test_unknown_paths_are_json_404(live: Live) -> None:
    response = support.get(live.url + "/nope")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


# ---------------------------------------------------------------- issue 14, point 6 and point 9
#
# NUL bytes, non-ASCII identifiers and Unicode digits at every endpoint, on SQLite and on
# PostgreSQL (which refuses a NUL in text: it once surfaced as a 500 with a traceback), and the
# strict syntax of HTTP Basic credentials.


@dataclass
class EdgeLive:
    backend: str
    url: str
    client_id: str
    secret: str
    rs_id: str  # registered with --can-introspect
    rs_secret: str

    def basic(self, who: str = "client") -> str:
        pair = (self.client_id, self.secret) if who == "client" else (self.rs_id, self.rs_secret)
        return "Basic " + base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def edge_live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLive]:
    tmp = tmp_path_factory.mktemp(f"edge-{request.param}")
    if request.param == "sqlite":
        db = f"sqlite:///{tmp / 'issuer.db'}"
        migrations.upgrade(db)
        cleanup = None
    else:
        cleanup, db = support.pg_clone(request.getfixturevalue("pg_template"))
    try:
        env = support.issuer_env(db, tmp / "keys")
        client_id, secret = support.register_client(env)
        rs_id, rs_secret = support.register_client(
            env, "--can-introspect", name="rs", grants=("client_credentials",)
        )
        support.add_user(env)
        with support.running_server(env, tmp / "server.log") as proc:
            yield EdgeLive(request.param, proc.url, client_id, secret, rs_id, rs_secret)
    finally:
        if cleanup is not None:
            support.pg_drop(cleanup)


def _b64(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Edge:
    id: str
    method: str
    path: str
    body: str  # form body for POST, query string for GET
    status: int
    error: str
    auth: str = "client"  # client | rs | none | a raw Authorization value
    www_authenticate: bool = False


NUL_AND_DIGITS = [
    # /token
    Edge(
        "token: a NUL in a body client_id",
        "POST",
        "/token",
        "grant_type=client_credentials&client_id=cli_%00&client_secret=x",
        400,
        "invalid_request",
        auth="none",
    ),
    Edge(
        "token: a non-ASCII body client_id",
        "POST",
        "/token",
        "grant_type=client_credentials&client_id=cli_%C3%A9&client_secret=x",
        401,
        "invalid_client",
        auth="none",
    ),
    Edge(
        "token: a NUL in a Basic client_id",
        "POST",
        "/token",
        "grant_type=client_credentials",
        401,
        "invalid_client",
        auth=_b64(b"cli_\x00x:secret"),
        www_authenticate=True,
    ),
    Edge(
        "token: a non-ASCII Basic client_id",
        "POST",
        "/token",
        "grant_type=client_credentials",
        401,
        "invalid_client",
        auth=_b64("cli_\u00e9:secret".encode()),
        www_authenticate=True,
    ),
    Edge(
        "token: a NUL in a username",
        "POST",
        "/token",
        "grant_type=password&username=al%00ice&password=x",
        400,
        "invalid_request",
    ),
    Edge(
        "token: a NUL in a refresh token",
        "POST",
        "/token",
        "grant_type=refresh_token&refresh_token=irt_%00",
        400,
        "invalid_request",
    ),
    Edge(
        "token: a control character in a parameter name",
        "POST",
        "/token",
        "grant_type=client_credentials&sc%01ope=read",
        400,
        "invalid_request",
    ),
    # /introspect
    Edge(
        "introspect: a NUL in token",
        "POST",
        "/introspect",
        "token=irt_%00",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "introspect: a non-ASCII token",
        "POST",
        "/introspect",
        "token=irt_%C3%A9",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "introspect: a NUL in a body client_id",
        "POST",
        "/introspect",
        "token=x&client_id=cli_%00&client_secret=x",
        400,
        "invalid_request",
        auth="none",
    ),
    Edge(
        "introspect: a non-ASCII body client_id",
        "POST",
        "/introspect",
        "token=x&client_id=%D9%A3&client_secret=x",
        401,
        "invalid_client",
        auth="none",
    ),
    Edge(
        "introspect: a NUL in a Basic client_id",
        "POST",
        "/introspect",
        "token=x",
        401,
        "invalid_client",
        auth=_b64(b"\x00:x"),
        www_authenticate=True,
    ),
    # /revoke
    Edge("revoke: a NUL in token", "POST", "/revoke", "token=irt_%00", 400, "invalid_request"),
    Edge("revoke: a non-ASCII token", "POST", "/revoke", "token=%E2%80%AE", 400, "invalid_request"),
    Edge(
        "revoke: a NUL in a body client_id",
        "POST",
        "/revoke",
        "token=x&client_id=cli_%00&client_secret=x",
        400,
        "invalid_request",
        auth="none",
    ),
    Edge(
        "revoke: a non-ASCII body client_id",
        "POST",
        "/revoke",
        "token=x&client_id=cli_%C2%B2&client_secret=x",
        401,
        "invalid_client",
        auth="none",
    ),
    Edge(
        "revoke: a NUL in a Basic client_id",
        "POST",
        "/revoke",
        "token=x",
        401,
        "invalid_client",
        auth=_b64(b"cli_\x00:x"),
        www_authenticate=True,
    ),
    # /revocations
    Edge(
        "revocations: since=superscript two",
        "GET",
        "/revocations",
        "since=%C2%B2",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: since=arabic-indic three",
        "GET",
        "/revocations",
        "since=%D9%A3",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: since=fullwidth one",
        "GET",
        "/revocations",
        "since=%EF%BC%91",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: since with a NUL",
        "GET",
        "/revocations",
        "since=1%00",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: since with a sign",
        "GET",
        "/revocations",
        "since=%2B5",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: since with an underscore",
        "GET",
        "/revocations",
        "since=1_0",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: since with a space",
        "GET",
        "/revocations",
        "since=%205",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: a POSTed Unicode since",
        "POST",
        "/revocations",
        "since=%D9%A3",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: a NUL in a Basic client_id",
        "GET",
        "/revocations",
        "since=0",
        401,
        "invalid_client",
        auth=_b64(b"cli_\x00:x"),
        www_authenticate=True,
    ),
    Edge(
        "revocations: a NUL in a body client_id",
        "POST",
        "/revocations",
        "client_id=cli_%00&client_secret=x",
        400,
        "invalid_request",
        auth="none",
    ),
    # found by schemathesis (tests/http/test_fuzz_openapi.py): a 500 on PostgreSQL, whose id is 32-bit
    Edge(
        "revocations: since beyond any cursor",
        "GET",
        "/revocations",
        "since=2147483648",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: a POSTed since beyond any cursor",
        "POST",
        "/revocations",
        "since=4000217147839850",
        400,
        "invalid_request",
        auth="rs",
    ),
    Edge(
        "revocations: the largest cursor is fine",
        "GET",
        "/revocations",
        "since=2147483647",
        200,
        "",
        auth="rs",
    ),
    Edge("revocations: an ASCII cursor is fine", "GET", "/revocations", "since=0", 200, "", auth="rs"),
]


def _send(live: EdgeLive, case: Edge) -> httpx.Response:
    headers = {}
    if case.auth in ("client", "rs"):
        headers["Authorization"] = live.basic(case.auth)
    elif case.auth != "none":
        headers["Authorization"] = case.auth
    if case.method == "GET":
        return support.get(f"{live.url}{case.path}?{case.body}", headers=headers)
    headers["Content-Type"] = FORM
    return support.post(live.url + case.path, content=case.body.encode(), headers=headers)


def _assert_error(response: httpx.Response, status: int, error: str, www_authenticate: bool) -> None:
    assert response.status_code == status, response.text
    if status == 200:
        return
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")
    assert len(response.content) < 512, "an error body is a short JSON, never a traceback"
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert ("www-authenticate" in response.headers) == www_authenticate


@pytest.mark.parametrize("case", NUL_AND_DIGITS, ids=[c.id for c in NUL_AND_DIGITS])
def test_nul_and_unicode_digits_are_refused_at_the_edge(edge_live: EdgeLive, case: Edge) -> None:
    """Issue 14 point 6: a NUL or a non-ASCII identifier/digit is the usual 4xx, never a 500."""
    _assert_error(_send(edge_live, case), case.status, case.error, case.www_authenticate)


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _mangle(header: str, how: str) -> str:
    """A Basic header whose base64 a lenient decoder still reads as the right credentials."""
    token = header.removeprefix("Basic ")
    if how == "junk":  # non-alphabet characters, which a lenient decoder skips
        return "Basic " + token[:4] + "!*" + token[4:]
    if how == "trailing bits":  # the same bytes, with the unused low bits of the last digit set
        assert token.endswith("=") and not token.endswith("=="), token  # 74 bytes: two spare bits
        last = _ALPHABET.index(token[-2])
        assert last & 3 == 0
        return "Basic " + token[:-2] + _ALPHABET[last | 1] + "="
    if how == "extra padding":
        return header + "=="
    if how == "data after padding":
        return header + "QUJD"
    if how == "a tab before the token":
        return "Basic\t" + token
    raise AssertionError(how)


STRICT_BASE64 = ["junk", "trailing bits", "extra padding", "data after padding"]


@pytest.mark.parametrize("how", STRICT_BASE64)
def test_strict_base64_for_basic_credentials(edge_live: EdgeLive, how: str) -> None:
    """Issue 14 point 9: Basic credentials are canonical base64 or invalid_client, however close."""
    good = edge_live.basic()
    assert (
        support.post(
            edge_live.url + "/token",
            headers={"Authorization": good},
            data={"grant_type": "client_credentials"},
        ).status_code
        == 200
    )
    response = support.post(
        edge_live.url + "/token",
        headers={"Authorization": _mangle(good, how)},
        data={"grant_type": "client_credentials"},
    )
    _assert_error(response, 401, "invalid_client", www_authenticate=True)


STRICT_BASIC = [
    ("a percent-encoded NUL in the id", b"cli_%00:x"),
    ("a percent-encoded NUL in the secret", b"cli_x:ics_%00"),
    ("percent-encoded invalid UTF-8 in the id", b"cli_%FF:x"),
    ("percent-encoded non-ASCII in the id", b"cli_%C3%A9:x"),
    ("no colon", b"cli_x"),
    ("an empty id", b":x"),
    ("an empty secret", b"cli_x:"),
    ("raw invalid UTF-8", b"cli_x:\xff"),
    ("a control character in the secret", b"cli_x:ics\x01"),
]


@pytest.mark.parametrize(("name", "raw"), STRICT_BASIC, ids=[n for n, _ in STRICT_BASIC])
def test_strict_base64_basic_credentials_are_form_encoded_ascii(
    edge_live: EdgeLive, name: str, raw: bytes
) -> None:
    """Issue 14 point 9: after the base64, strict UTF-8 and RFC 6749 2.3.1 form-urlencoding."""
    response = support.post(
        edge_live.url + "/token",
        headers={"Authorization": _b64(raw)},
        data={"grant_type": "client_credentials"},
    )
    _assert_error(response, 401, "invalid_client", www_authenticate=True)


def test_basic_credentials_are_form_urldecoded(edge_live: EdgeLive) -> None:
    """RFC 6749 2.3.1: the id and secret are form-urlencoded before Basic; '%5F' is '_'."""
    encoded = edge_live.client_id.replace("_", "%5F") + ":" + edge_live.secret.replace("_", "%5F")
    response = support.post(
        edge_live.url + "/token",
        headers={"Authorization": _b64(encoded.encode())},
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.text
