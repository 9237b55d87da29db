"""The BFF end to end: a real ``issuer serve``, a real ``issuer bff serve``, a test upstream that
verifies the bearer token with ``issuer_verify``, and a browser at the HTTP level.

DESIGN.md, "The backend-for-frontend (BFF)"; issue 11: sign-in through the issuer's login page,
no token in anything the browser sees, CSRF by a required header, an allowlist of upstreams, no
open redirect, logout revoking the family at the issuer, transparent refresh shared by parallel
calls (also across two instances on one Redis), sessions that survive a restart.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from issuer.bff.sessions import Sealer, Session, digest
from issuer.bff.store import DatabaseSessions
from issuer.keys.material import b64encode
from issuer.store.database import Database
from tests import support
from tests.bff.support import BffProcess, SpaBrowser, Upstream, leaks
from tests.bff.support import issuer_env as bff_issuer_env
from tests.bff.upstream import FIRST, GZIPPED, REST

ACCESS_TTL = 10  # ISSUER_ACCESS_TOKEN_TTL's minimum
METRICS_TOKEN = "metrics-" + secrets.token_urlsafe(16)


@dataclass
class Setting:
    issuer: support.ServerProcess
    issuer_env: dict[str, str]
    upstream: Upstream
    subject: str
    client_id: str
    client_secret: str
    directory: Path

    def bff_env(self, port: int, db: Path, key: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in self.issuer_env.items() if not k.startswith(("ISSUER_", "BFF_"))}
        env.update(
            BFF_URL=f"http://127.0.0.1:{port}",
            BFF_ISSUER_URL=self.issuer.url,
            BFF_CLIENT_ID=self.client_id,
            BFF_CLIENT_SECRET=self.client_secret,
            BFF_SCOPE="openid read",
            BFF_UPSTREAMS=f"/api={self.upstream.url}/v1",
            BFF_DATABASE_URL=f"sqlite:///{db}",
            BFF_SESSION_KEY=key,
            BFF_REFRESH_LEEWAY="2",
            BFF_MAX_BODY_BYTES="4096",
            BFF_POST_LOGOUT_REDIRECT_URI=f"http://127.0.0.1:{port}/",
            BFF_METRICS_TOKEN=METRICS_TOKEN,
        )
        env.update(extra)
        return env


@dataclass
class Bff:
    process: BffProcess
    url: str
    db: Path
    key: str

    async def session(self, browser: SpaBrowser, cookie: str | None = None) -> Session | None:
        store = DatabaseSessions(Database(f"sqlite:///{self.db}"), Sealer(_key(self.key)))
        try:
            return await store.get(digest(cookie or browser.cookies["__Host-bff-session"]))
        finally:
            await store.close()


def _key(text: str) -> bytes:
    from issuer.keys.material import b64decode

    return b64decode(text)


BFF_PORTS: list[int] = []


@pytest.fixture
def new_browser() -> Iterator[Callable[..., SpaBrowser]]:
    """Browsers for one test (their connections closed afterwards)."""
    made: list[SpaBrowser] = []

    def make(**kwargs: Any) -> SpaBrowser:
        made.append(SpaBrowser(**kwargs))
        return made[-1]

    yield make
    for browser in made:
        browser.http.close()


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    directory = tmp_path_factory.mktemp("bff")
    env = bff_issuer_env(directory, ISSUER_ACCESS_TOKEN_TTL=str(ACCESS_TTL))
    ports = [support.free_port() for _ in range(7)]
    BFF_PORTS[:] = ports
    redirects: list[str] = []
    for port in ports:
        redirects += ["--redirect-uri", f"http://127.0.0.1:{port}/bff/callback"]
        redirects += ["--post-logout-redirect-uri", f"http://127.0.0.1:{port}/"]
    with support.running_server(env, directory / "issuer.log") as issuer:
        env["ISSUER_URL"] = issuer.url
        client_id, secret = support.register_client(
            env,
            *redirects,
            "--first-party",
            "--can-introspect",  # the BFF may follow the revocation feed
            name="bff",
            grants=("authorization_code", "refresh_token"),
            scope="openid read",
        )
        subject = support.add_user(env)
        upstream = Upstream(issuer.url, directory / "upstream.log").start()
        try:
            yield Setting(issuer, env, upstream, subject, client_id, secret, directory)
        finally:
            upstream.stop()


def _start_bff(
    setting: Setting, index: int, db: Path | None = None, key: str | None = None, **extra: str
) -> Bff:
    port = BFF_PORTS[index]
    db = db or setting.directory / f"bff-{index}-{secrets.token_hex(3)}.db"
    key = key or b64encode(secrets.token_bytes(32))
    env = setting.bff_env(port, db, key, BFF_KEYS_DIR=str(setting.directory / "bff-keys"), **extra)
    process = BffProcess(env, port, setting.directory / f"bff-{index}.log")
    process.start()
    return Bff(process, process.url, db, key)


@pytest.fixture(scope="module")
def bff(setting: Setting) -> Iterator[Bff]:
    live = _start_bff(setting, 0)
    try:
        yield live
    finally:
        live.process.stop()


def _families(setting: Setting) -> list[dict[str, Any]]:
    result = support.run_cli_here(
        setting.issuer_env, "sessions", "list", "--subject", setting.subject, "--all", "--json"
    )
    assert result.returncode == 0, result.stderr
    return [f for f in json.loads(result.stdout) if f["client_id"] == setting.client_id]


def _family_state(setting: Setting, family: str | None) -> str:
    return next(f["state"] for f in _families(setting) if f["family"] == family)


def _wait_past(exp: int) -> None:
    """Wait until the wall clock is past ``exp`` (an access token's expiry)."""
    deadline = time.monotonic() + ACCESS_TTL + 30
    while time.time() <= exp + 0.5:
        assert time.monotonic() < deadline, "the clock did not pass the token's expiry"
        time.sleep(0.2)


# ---------------------------------------------------------------- sign-in, user, the proxy


async def test_sign_in_then_call_the_upstream_without_a_token_in_the_browser(
    new_browser: Callable[..., SpaBrowser], setting: Setting, bff: Bff
) -> None:
    browser = new_browser()
    answer = browser.sign_in(bff.url, return_to="/app?tab=1")
    assert answer.status_code == 303 and answer.headers["location"] == "/app?tab=1"
    assert "__Host-bff-login" not in browser.cookies  # the login state is gone
    cookie_line = next(line for line in browser.cookie_lines if line.startswith("__Host-bff-session="))
    attributes = {part.strip().lower() for part in cookie_line.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    assert len(browser.cookies["__Host-bff-session"]) == 43  # 256 bits, base64url

    me = browser.get(bff.url + "/bff/user")
    assert me.status_code == 200 and me.headers["cache-control"] == "no-store"
    body = me.json()
    assert body["sub"] == setting.subject and body["claims"]["sub"] == setting.subject
    assert body["expires_at"] > time.time()

    echoed = browser.call(bff.url + "/api/things?x=1")
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["sub"] == setting.subject and echoed.json()["path"] == "/v1/things"
    assert echoed.json()["query"] == "x=1"
    # Nothing the BFF sent the browser holds a token, nor any cookie but its own.
    assert leaks(browser.seen, bff.url) == []
    assert set(browser.cookies) <= {"__Host-bff-session", "__Host-issuer-session", "__Host-issuer-request"}
    assert all(not TOKEN_IN(v) for v in browser.cookies.values())


def TOKEN_IN(value: str) -> bool:
    from tests.bff.support import TOKEN_SHAPES

    return TOKEN_SHAPES.search(value) is not None


async def test_the_proxy_forwards_the_request_and_strips_the_browsers_credentials(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    browser.call(bff.url + "/api/first")  # the upstream sets a cookie: the BFF keeps none of it
    answer = browser.request(
        "POST",
        bff.url + "/api/items/%2Fx?q=a%20b",
        headers={
            "x-csrf": "1",
            "authorization": "Basic Zm9vOmJhcg==",
            "x-app": "named-by-connection",
            "connection": "x-app",
            "x-forwarded-for": "203.0.113.9",
            "forwarded": "for=203.0.113.9",
        },
        content=b'{"name": "n"}',
    )
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["method"] == "POST" and seen["body"] == '{"name": "n"}'
    assert seen["raw_path"] == "/v1/items/%2Fx" and seen["query"] == "q=a%20b"
    # the browser's Cookie and Authorization never reach the upstream; the connection-named field neither
    assert (
        "cookie" not in seen["headers"] and "x-csrf" not in seen["headers"] and "x-app" not in seen["headers"]
    )
    assert "authorization" in seen["headers"]  # the BFF's bearer (the upstream verified it)
    assert "x-forwarded-for" not in seen["headers"] and "forwarded" not in seen["headers"]
    # the upstream's Set-Cookie and its hop-by-hop fields are not passed on; the rest is
    assert "set-cookie" not in answer.headers and "x-hop" not in answer.headers
    assert "access-control-allow-origin" not in answer.headers
    assert answer.headers["x-upstream"] == "yes"
    plain = browser.request("GET", bff.url + "/api", headers={"x-csrf": "1"})
    assert plain.status_code == 200 and plain.json()["path"] == "/v1"


async def test_the_proxy_sends_only_the_browsers_fields(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    for name in ("accept", "accept-encoding", "user-agent"):
        del browser.http.headers[name]  # httpx's defaults: this browser sends none of them
    seen = browser.call(bff.url + "/api/bare", "POST", content=b"x").json()
    # no Accept-Encoding of the BFF's own (the answer's bytes are relayed undecoded), no Accept,
    # User-Agent or Content-Type either
    assert {"accept", "accept-encoding", "user-agent", "content-type"}.isdisjoint(seen["headers"])
    sent = {"x-csrf": "1", "accept-encoding": "identity", "x-name": "é".encode()}  # UTF-8 goes on
    seen = browser.request("GET", bff.url + "/api/named", headers=sent).json()
    assert {"accept-encoding", "x-name"} <= set(seen["headers"])


async def test_a_header_value_that_is_not_utf8_is_a_400(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    answer = browser.request("GET", bff.url + "/api/things", headers={"x-csrf": "1", "x-latin": b"caf\xe9"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


async def test_a_body_above_the_limit_is_refused(new_browser: Callable[..., SpaBrowser], bff: Bff) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    answer = browser.request("POST", bff.url + "/api/upload", headers={"x-csrf": "1"}, content=b"x" * 5000)
    assert answer.status_code == 413


@contextmanager
def _streamed(browser: SpaBrowser, url: str) -> Iterator[httpx.Response]:
    """A proxied GET whose answer is read as it arrives (raw bytes: no decoding)."""
    cookie = f"__Host-bff-session={browser.cookies['__Host-bff-session']}"
    with browser.http.stream("GET", url, headers={"x-csrf": "1", "cookie": cookie}) as answer:
        yield answer


def _big(size: int) -> bytes:
    """What the upstream's ``/big?n=size`` sends."""
    parts = [b"%d" % (i % 10) * (size // 4) for i in range(3)]
    return b"".join(parts) + b"z" * (size - sum(map(len, parts)))


async def test_a_small_answer_is_relayed_byte_for_byte(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    with _streamed(browser, bff.url + "/api/gzip") as answer:
        raw = b"".join(answer.iter_raw())
    assert answer.status_code == 200
    assert raw == GZIPPED  # not decoded, not re-encoded
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["content-length"] == str(len(GZIPPED))
    assert answer.headers["content-type"] == "text/plain"
    assert "transfer-encoding" not in answer.headers
    # a field sent twice comes back as one list (RFC 9110 5.3); neither Set-Cookie does
    assert answer.headers.get_list("x-multi") == ["a, b"]
    assert answer.headers.get_list("set-cookie") == []
    assert "x-hop" not in answer.headers and "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("declared", [False, True])
async def test_a_large_answer_is_relayed_whole(
    new_browser: Callable[..., SpaBrowser], bff: Bff, declared: bool
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    size = 1_000_001  # more than a first read can hold (aiohttp pauses past 128 KiB)
    with _streamed(browser, bff.url + f"/api/big?n={size}" + ("&length=1" if declared else "")) as answer:
        raw = b"".join(answer.iter_raw())
    assert answer.status_code == 200 and raw == _big(size)
    if declared:
        assert answer.headers["content-length"] == str(size)
    else:  # an unknown length stays unknown: chunked to the browser
        assert answer.headers["transfer-encoding"] == "chunked" and "content-length" not in answer.headers


@pytest.mark.parametrize("declared", [False, True])
async def test_a_large_answer_is_streamed_as_the_upstream_sends_it(
    new_browser: Callable[..., SpaBrowser], setting: Setting, bff: Bff, declared: bool
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    name = secrets.token_hex(8)
    url = bff.url + f"/api/drip?id={name}" + ("&length=1" if declared else "")
    with _streamed(browser, url) as answer:
        assert answer.status_code == 200
        chunks = answer.iter_raw()
        received = b""
        while len(received) < len(FIRST):  # the upstream holds the rest until released
            received += next(chunks)
        assert received == FIRST
        support.get(setting.upstream.url + f"/release?id={name}", timeout=30).raise_for_status()
        received += b"".join(chunks)
    assert received == FIRST + REST


async def test_head_is_proxied_without_a_body(new_browser: Callable[..., SpaBrowser], bff: Bff) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    answer = browser.request("HEAD", bff.url + "/api/things", headers={"x-csrf": "1"})
    assert answer.status_code == 200 and answer.content == b""
    assert answer.headers["content-type"] == "application/json" and answer.headers["x-upstream"] == "yes"


@pytest.fixture(scope="module")
def failing(setting: Setting) -> Iterator[Bff]:
    """A BFF with a short upstream timeout and a second upstream where nothing listens."""
    closed = support.free_port()
    live = _start_bff(
        setting,
        6,
        BFF_HTTP_TIMEOUT="3",
        BFF_UPSTREAMS=f"/api={setting.upstream.url}/v1,/dead=http://127.0.0.1:{closed}",
    )
    try:
        yield live
    finally:
        live.process.stop()


async def test_an_unreachable_upstream_is_a_502(new_browser: Callable[..., SpaBrowser], failing: Bff) -> None:
    browser = new_browser()
    browser.sign_in(failing.url)
    answer = browser.call(failing.url + "/dead/things")
    assert answer.status_code == 502 and answer.json()["error"] == "bad_gateway"
    assert browser.call(failing.url + "/api/things").status_code == 200  # the other upstream still works


async def test_an_upstream_past_the_timeout_is_a_502(
    new_browser: Callable[..., SpaBrowser], setting: Setting, failing: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(failing.url)
    name = secrets.token_hex(8)
    try:
        answer = browser.call(failing.url + f"/api/slow?id={name}")  # the upstream waits for /release
    finally:
        support.get(setting.upstream.url + f"/release?id={name}", timeout=30).raise_for_status()
    assert answer.status_code == 502 and answer.json()["error"] == "bad_gateway"


@pytest.mark.parametrize(
    ("method", "headers"),
    [("GET", {}), ("POST", {}), ("GET", {"x-csrf": "0"}), ("DELETE", {"x-csrf": "true"})],
)
async def test_a_proxied_call_without_the_csrf_header_is_403(
    new_browser: Callable[..., SpaBrowser], bff: Bff, method: str, headers: dict[str, str]
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    answer = browser.request(method, bff.url + "/api/things", headers=headers)
    assert answer.status_code == 403
    assert "sub" not in answer.text  # the upstream was not called


@pytest.mark.parametrize(
    "path", ["/other/x", "/apix", "/v1/things", "/api/%2e%2e/secret", "/api/../x", "/bff/nope"]
)
async def test_only_the_configured_prefixes_are_proxied(
    new_browser: Callable[..., SpaBrowser], bff: Bff, path: str
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    answer = browser.request("GET", bff.url + path, headers={"x-csrf": "1"})
    assert answer.status_code == 404, (path, answer.text)


async def test_without_a_session_the_proxy_and_user_are_401(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    browser = new_browser()
    assert browser.get(bff.url + "/bff/user").status_code == 401
    assert browser.call(bff.url + "/api/things").status_code == 401
    browser.cookies["__Host-bff-session"] = secrets.token_urlsafe(32)  # a guessed id
    assert browser.get(bff.url + "/bff/user").status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/%0a",
        "/a\\b",
        "evil",
        "http:/x",
    ],
)
async def test_open_redirects_are_refused(
    new_browser: Callable[..., SpaBrowser], bff: Bff, target: str
) -> None:
    browser = new_browser()
    answer = browser.get(bff.url + "/bff/login", params={"return_to": target})
    if target == "/%0a":  # percent-encoded stays encoded: a harmless same-origin path
        assert answer.status_code == 303
        return
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "__Host-bff-login" not in browser.cookies


async def test_the_callback_needs_this_browsers_state(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    alice = new_browser()
    started = alice.get(bff.url + "/bff/login")
    assert started.status_code == 303
    # no login cookie (another browser, or a forged link)
    assert new_browser().get(bff.url + "/bff/callback", params={"code": "x", "state": "y"}).status_code == 400
    # the cookie, but another state
    forged = alice.get(bff.url + "/bff/callback", params={"code": "x", "state": "not-the-state"})
    assert forged.status_code == 400 and "__Host-bff-session" not in alice.cookies
    # a tampered login cookie
    mallory = new_browser(cookies={"__Host-bff-login": "A" * 80})
    assert mallory.get(bff.url + "/bff/callback", params={"code": "x", "state": "y"}).status_code == 400


async def test_the_callback_checks_the_issuer_of_the_answer(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    """RFC 9207 2.4 (mix-up defence): ``iss`` must be the issuer's, and present, since the issuer's
    metadata says it sends it."""
    browser = new_browser()
    started = browser.get(bff.url + "/bff/login")
    state = httpx.URL(started.headers["location"]).params["state"]
    for iss in ("https://evil.example", None):
        params = {"code": "ica_x", "state": state, **({"iss": iss} if iss else {})}
        keep = dict(browser.cookies)
        answer = browser.get(bff.url + "/bff/callback", params=params)
        assert answer.status_code == 400 and "issuer" in answer.json()["error_description"], iss
        browser.cookies = keep  # the refusal cleared the login cookie: try the other case with it


async def test_a_new_login_replaces_the_session_id(new_browser: Callable[..., SpaBrowser], bff: Bff) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    first = browser.cookies["__Host-bff-session"]
    browser.sign_in(bff.url)
    second = browser.cookies["__Host-bff-session"]
    assert first != second
    assert new_browser(cookies={"__Host-bff-session": first}).get(bff.url + "/bff/user").status_code == 401


# ---------------------------------------------------------------- logout


async def test_logout_needs_the_csrf_header_then_revokes_the_family(
    new_browser: Callable[..., SpaBrowser], setting: Setting, bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    session = await bff.session(browser)
    assert session is not None and session.sid is not None
    assert _family_state(setting, session.sid) == "live"
    for headers in ({}, {"x-csrf": "0"}, {"origin": "https://evil.example"}, {"origin": "null"}):
        refused = browser.request("POST", bff.url + "/bff/logout", headers=headers)
        assert refused.status_code == 403, headers
    assert browser.get(bff.url + "/bff/user").status_code == 200  # nothing ended
    done = browser.request("POST", bff.url + "/bff/logout", headers={"x-csrf": "1"})
    assert done.status_code == 204 and "__Host-bff-session" not in browser.cookies
    assert browser.get(bff.url + "/bff/user").status_code == 401
    assert _family_state(setting, session.sid).startswith("revoked")
    # the refresh token the BFF held is dead at the issuer
    assert session.tokens.refresh_token is not None
    refreshed = support.post(
        setting.issuer.url + "/token",
        data={"grant_type": "refresh_token", "refresh_token": session.tokens.refresh_token},
        auth=(setting.client_id, setting.client_secret),
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


async def test_a_form_on_the_bffs_own_origin_may_log_out(
    new_browser: Callable[..., SpaBrowser], bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    answer = browser.request("POST", bff.url + "/bff/logout?global=1", headers={"origin": bff.url})
    assert answer.status_code == 303 and "__Host-bff-session" not in browser.cookies


async def test_global_logout_sends_the_browser_to_the_issuer(
    new_browser: Callable[..., SpaBrowser], setting: Setting, bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    answer = browser.request("POST", bff.url + "/bff/logout?global=1", headers={"x-csrf": "1"})
    assert answer.status_code == 303
    location = httpx.URL(answer.headers["location"])
    assert str(location).startswith(setting.issuer.url + "/logout?")
    assert location.params["post_logout_redirect_uri"] == bff.url + "/"
    assert location.params["client_id"] == setting.client_id and location.params["id_token_hint"]
    landed = browser.get(str(location))  # the issuer ends its browser session and comes back
    assert landed.status_code == 303 and landed.headers["location"].startswith(bff.url + "/")
    assert browser.get(bff.url + "/bff/user").status_code == 401


# ---------------------------------------------------------------- refresh


async def _parallel(url: str, cookie: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        return await asyncio.gather(
            *(
                http.get(url, headers={"x-csrf": "1", "cookie": f"__Host-bff-session={cookie}"})
                for _ in range(count)
            )
        )


async def test_parallel_calls_at_expiry_share_one_refresh(
    new_browser: Callable[..., SpaBrowser], setting: Setting, bff: Bff
) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    first = browser.call(bff.url + "/api/one").json()
    _wait_past(first["exp"])
    answers = await _parallel(bff.url + "/api/two", browser.cookies["__Host-bff-session"], 10)
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    jtis = {a.json()["jti"] for a in answers}
    assert len(jtis) == 1 and first["jti"] not in jtis  # one refresh, shared by all ten
    session = await bff.session(browser)
    assert session is not None and _family_state(setting, session.sid) == "live"
    # and again past the next expiry: the family still rotates (it was never replayed)
    _wait_past(answers[0].json()["exp"])
    later = browser.call(bff.url + "/api/three")
    assert later.status_code == 200 and later.json()["jti"] not in jtis
    assert _family_state(setting, session.sid) == "live"
    assert leaks(browser.seen, bff.url) == []


# ---------------------------------------------------------------- restarts and instances


async def test_a_restart_keeps_sessions(new_browser: Callable[..., SpaBrowser], setting: Setting) -> None:
    first = _start_bff(setting, 1)
    try:
        browser = new_browser()
        browser.sign_in(first.url)
        assert browser.call(first.url + "/api/x").status_code == 200
    finally:
        first.process.stop()
    again = _start_bff(setting, 1, db=first.db, key=first.key)
    try:
        assert browser.get(again.url + "/bff/user").status_code == 200
        assert browser.call(again.url + "/api/x").json()["sub"] == setting.subject
    finally:
        again.process.stop()


async def test_a_restart_with_redis_keeps_sessions(
    new_browser: Callable[..., SpaBrowser], setting: Setting, redis_prefix: str
) -> None:
    extra = {"BFF_REDIS_URL": support.REDIS_URL, "BFF_REDIS_PREFIX": redis_prefix}
    first = _start_bff(setting, 2, **extra)
    try:
        browser = new_browser()
        browser.sign_in(first.url)
        assert browser.call(first.url + "/api/x").status_code == 200
    finally:
        first.process.stop()
    again = _start_bff(setting, 2, db=first.db, key=first.key, **extra)
    try:
        assert browser.call(again.url + "/api/x").json()["sub"] == setting.subject
    finally:
        again.process.stop()


async def test_two_instances_on_one_redis_share_one_refresh_and_a_logout(
    new_browser: Callable[..., SpaBrowser], setting: Setting, redis_prefix: str
) -> None:
    extra = {"BFF_REDIS_URL": support.REDIS_URL, "BFF_REDIS_PREFIX": redis_prefix}
    a = _start_bff(setting, 3, **extra)
    b = _start_bff(setting, 4, db=a.db, key=a.key, **extra)
    try:
        browser = new_browser()
        browser.sign_in(a.url)
        cookie = browser.cookies["__Host-bff-session"]
        first = browser.call(b.url + "/api/x")  # the other instance knows the session
        assert first.status_code == 200, first.text
        for _ in range(2):  # two expiries, requests alternating between the instances
            _wait_past(first.json()["exp"])
            answers = [
                answer
                for pair in zip(
                    await _parallel(a.url + "/api/y", cookie, 5),
                    await _parallel(b.url + "/api/y", cookie, 5),
                    strict=True,
                )
                for answer in pair
            ]
            assert [r.status_code for r in answers] == [200] * 10, [r.text for r in answers]
            first = answers[0]
        session = await a.session(browser)
        assert session is not None and _family_state(setting, session.sid) == "live"
        # b holds the session in its in-process copy; a logout on a ends it on b as soon as a's
        # invalidation reaches b (a request b reads before its event loop takes the message up is
        # answered as a moment earlier; that the copy is then exact, and is bypassed while the
        # subscription is down, is tests/bff/test_store.py's). The hang guard is under the copy's
        # 5 s backstop only to keep a broken invalidation from passing by expiry.
        assert browser.get(b.url + "/bff/user").status_code == 200
        assert browser.request("POST", a.url + "/bff/logout", headers={"x-csrf": "1"}).status_code == 204
        deadline = time.monotonic() + 4
        while True:
            after = browser.http.get(b.url + "/bff/user", headers={"cookie": f"__Host-bff-session={cookie}"})
            if after.status_code == 401 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert after.status_code == 401
    finally:
        a.process.stop()
        b.process.stop()


# ---------------------------------------------------------------- the issuer's revocations, health


async def test_an_operator_revocation_ends_the_session(
    new_browser: Callable[..., SpaBrowser], setting: Setting
) -> None:
    bff = _start_bff(setting, 5, BFF_DENYLIST_FEED="true")
    try:
        browser = new_browser()
        browser.sign_in(bff.url)
        assert browser.call(bff.url + "/api/x").status_code == 200
        cookie = browser.cookies["__Host-bff-session"]
        session = await bff.session(browser)
        assert session is not None and session.sid is not None
        revoked = support.run_cli_here(setting.issuer_env, "sessions", "revoke", "--family", session.sid)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 15
        while browser.get(bff.url + "/bff/user").status_code != 401:
            assert time.monotonic() < deadline, "the BFF did not follow the revocation"
            time.sleep(0.1)
        assert browser.call(bff.url + "/api/x").status_code == 401
        assert await bff.session(browser, cookie) is None  # deleted, not only refused
        # log a user out everywhere: the BFF session of that user ends too
        support.add_user(setting.issuer_env, "bob")
        bob = new_browser()
        bob.sign_in(bff.url, username="bob")
        assert bob.call(bff.url + "/api/x").status_code == 200
        revoked = support.run_cli_here(setting.issuer_env, "sessions", "revoke", "--username", "bob")
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 15
        while bob.get(bff.url + "/bff/user").status_code != 401:
            assert time.monotonic() < deadline, "the BFF did not follow the subject's revocation"
            time.sleep(0.1)
    finally:
        bff.process.stop()


async def test_health_endpoints(new_browser: Callable[..., SpaBrowser], bff: Bff) -> None:
    browser = new_browser()
    for path in ("/healthz", "/bff/healthz"):
        answer = browser.get(bff.url + path)
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    for path in ("/readyz", "/bff/readyz"):
        answer = browser.get(bff.url + path)
        assert answer.status_code == 200, answer.text
        assert answer.json()["checks"] == {"database": "ok", "redis": "not configured", "issuer": "ok"}


async def test_metrics_need_the_token_and_count(new_browser: Callable[..., SpaBrowser], bff: Bff) -> None:
    browser = new_browser()
    browser.sign_in(bff.url)
    assert browser.call(bff.url + "/api/counted").status_code == 200
    assert browser.get(bff.url + "/bff/metrics").status_code == 404
    assert (
        browser.get(
            bff.url + "/bff/metrics", headers={"authorization": "Bearer wrong-token-123456"}
        ).status_code
        == 404
    )
    answer = browser.get(bff.url + "/bff/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status_code == 200
    lines = answer.text.splitlines()
    started = next(line for line in lines if line.startswith("bff_sessions_started_total "))
    assert float(started.split()[1]) >= 1
    assert any(line.startswith('bff_proxied_requests_total{status="200",upstream="/api"}') for line in lines)
    assert any(line.startswith('bff_upstream_seconds_count{upstream="/api"}') for line in lines)
