"""``GET /.well-known/jwks.json`` is answered by ``issuer serve``'s HTTP protocol without starting the
app's task (:class:`~issuer.http.limits.LimitedHttpToolsProtocol` with
:meth:`~issuer.http.direct.IssuerApp.answer_now`). Over real sockets, on uvicorn with that protocol,
every kind of request gets the same bytes from the app as from the app with every request through
Litestar's router (``create_app(direct=False)``), but for the ``date`` and a generated request id;
and the protocol did answer the ones it should itself: none with a body, a query or an escape in
its path, no ``HEAD``, no other path, none behind another answer in flight.
Pipelined and kept-alive requests keep their order and framing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar

from issuer.app import create_app
from issuer.http.cors import cors_headers
from issuer.http.direct import NOW, IssuerApp, jwks_now
from issuer.http.limits import LimitedHttpToolsProtocol
from issuer.http.responses import common_headers
from issuer.keys.material import KeyMaterial
from issuer.runtime import Runtime
from tests.conftest import make_settings

JWKS = "/.well-known/jwks.json"


@dataclass
class Servers:
    runtime: Runtime
    quick: int  # port of the app answering JWKS in the protocol
    routed: int  # port of the app routing everything through Litestar
    answered_now: list[str]  # paths the protocol answered without the app's task


async def _serve(app: Litestar, runtime: Runtime) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        lifespan="off",
        http=LimitedHttpToolsProtocol.configure(runtime.settings),
        access_log=False,
        log_config=None,  # the test's logging stays as it is
        server_header=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    return server, task, int(sock.getsockname()[1])


@pytest.fixture
async def servers(sqlite_url: str, tmp_path: Path, material: KeyMaterial) -> AsyncIterator[Servers]:
    limits = LimitedHttpToolsProtocol.limits
    runtime = Runtime(make_settings(sqlite_url, tmp_path), material=material)
    await runtime.start()
    running = []
    try:
        quick, routed = create_app(runtime=runtime), create_app(runtime=runtime, direct=False)
        for app in (quick, routed):  # what the lifespan would set; the runtime is started once, here
            app.state.runtime = runtime
            app.state.retry_after = runtime.settings.retry_after
        answered: list[str] = []
        answer_now = quick.answer_now

        def counting(scope: Any) -> Any:
            answer = answer_now(scope)
            if answer is not None:
                answered.append(scope["path"])
            return answer

        quick.answer_now = counting  # type: ignore[method-assign]  # found on the app, per connection
        for app in (quick, routed):
            running.append(await _serve(app, runtime))
        yield Servers(runtime, running[0][2], running[1][2], answered)
    finally:
        for server, task, _ in running:
            server.should_exit = True
            await task
        await runtime.close()
        LimitedHttpToolsProtocol.limits = limits


@contextmanager
def no_uvicorn_access_log() -> Iterator[None]:
    """uvicorn's own access log off, as ``issuer serve`` has it (with it on, the protocol leaves
    every answer to uvicorn's send, which writes that log); the capture handlers pytest puts on
    the logger while a test runs would turn it on. Each connection looks when it opens."""
    access = logging.getLogger("uvicorn.access")
    handlers = access.handlers
    access.handlers = []
    try:
        yield
    finally:
        access.handlers = handlers


async def exchange(port: int, raw: bytes, answers: int = 1) -> list[bytes]:
    """Send ``raw`` in one write; read ``answers`` whole responses (by Content-Length, or to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        got: list[bytes] = []
        buffer = b""
        while len(got) < answers:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length" and not raw.startswith(b"HEAD "):
                        length = int(value)
                if len(rest) >= length:
                    got.append(head + sep + rest[:length])
                    buffer = rest[length:]
                    continue
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                got.append(buffer)
                break
            buffer += chunk
        if b"connection: close" in got[-1].split(b"\r\n\r\n")[0]:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # and the server closed it
        return got
    finally:
        writer.close()


def normal(answer: bytes) -> bytes:
    """The answer with its date and a generated request id masked."""
    lines = []
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.startswith(b"date: "):
            line = b"date: <now>"
        elif line.startswith(b"x-request-id: ") and not line.startswith(b"x-request-id: given-"):
            line = b"x-request-id: <generated>"
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(path: str = JWKS, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    fields = "".join(f"{header}\r\n" for header in headers)
    return f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{fields}\r\n".encode()


async def test_every_kind_of_jwks_request_is_answered_as_the_routed_app_does(servers: Servers) -> None:
    etag = servers.runtime.keyring.jwks_etag
    cases: dict[str, tuple[bytes, int, int]] = {  # name: (request bytes, answers, of them answered now)
        "plain": (get(), 1, 1),
        "origin": (get(JWKS, "Origin: https://app.example"), 1, 1),
        "origin, preflight header on a GET": (
            get(JWKS, "Origin: https://app.example", "Access-Control-Request-Method: GET"),
            1,
            1,
        ),
        "two origins": (get(JWKS, "Origin: https://a.example", "Origin: https://b.example"), 1, 1),
        "not modified": (get(JWKS, f"If-None-Match: {etag}"), 1, 1),
        "not modified, weak in a list": (get(JWKS, f'If-None-Match: "other", W/{etag}'), 1, 1),
        "not modified, star": (get(JWKS, "If-None-Match: *"), 1, 1),
        "foreign etag": (get(JWKS, 'If-None-Match: "0123"'), 1, 1),
        "request id given": (get(JWKS, "X-Request-ID: given-42"), 1, 1),
        "request id shaped like a credential": (get(JWKS, "X-Request-ID: Bearer abcdefgh"), 1, 1),
        "query string": (get(JWKS + "?x=1"), 1, 0),  # matched as sent: the app answers it
        "HTTP/1.0": (get(JWKS, version="1.0"), 1, 1),
        "connection close": (get(JWKS, "Connection: close"), 1, 1),
        "three kept alive, pipelined": (get() * 3, 3, 3),
        "then a token request": (
            get() + b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n" + get(),
            3,
            1,  # the second GET waits behind the token request: the app answers it, in order
        ),
        "with a body": (get(JWKS, "Content-Length: 3") + b"abc", 1, 0),
        "HEAD": (get(method="HEAD"), 1, 0),
        "POST": (get(method="POST"), 1, 0),
        "another path": (get("/.well-known/openid-configuration"), 1, 0),
        "an escaped path": (get("/.well-known/jwks%2Ejson"), 1, 0),
        "a trailing slash": (get(JWKS + "/"), 1, 0),
    }
    for name, (raw, answers, now) in cases.items():
        servers.answered_now.clear()
        with no_uvicorn_access_log():
            quick = await exchange(servers.quick, raw, answers)
        routed = await exchange(servers.routed, raw, answers)
        assert len(quick) == answers, name
        assert [normal(a) for a in quick] == [normal(a) for a in routed], name
        assert servers.answered_now == [JWKS] * now, name
    assert servers.answered_now == []  # the last case went through the app


async def test_answers_given_at_once_are_counted_and_logged(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    before = servers.runtime.metrics.http.responses.get((JWKS, 200), 0)
    with caplog.at_level("INFO", logger="issuer.access"), no_uvicorn_access_log():
        answers = await exchange(servers.quick, get(JWKS, "X-Request-ID: given-7") * 2, 2)
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
    assert servers.answered_now == [JWKS, JWKS]
    assert servers.runtime.metrics.http.responses[(JWKS, 200)] == before + 2
    lines = [r for r in caplog.records if r.name == "issuer.access" and getattr(r, "path", "") == JWKS]
    assert [(r.status, r.method) for r in lines] == [(200, "GET"), (200, "GET")]  # type: ignore[attr-defined]


class _BrokenRing:
    """A key ring whose JWKS cannot be read: a bug on the JWKS path."""

    @property
    def jwks_etag(self) -> str:
        raise RuntimeError("no JWKS")

    jwks_body = jwks_etag


async def test_a_bug_is_the_routed_apps_500(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers.runtime, "keyring", _BrokenRing())
    servers.answered_now.clear()
    with no_uvicorn_access_log():
        quick = await exchange(servers.quick, get(JWKS, "Origin: https://app.example"))
    routed = await exchange(servers.routed, get(JWKS, "Origin: https://app.example"))
    assert quick[0].startswith(b"HTTP/1.1 500 ")
    assert b"no JWKS" not in quick[0]  # never a trace to the client
    assert [normal(a) for a in quick] == [normal(a) for a in routed]
    assert servers.answered_now == [JWKS]


def test_answers_at_once_need_the_apps_own_hooks_and_public_documents() -> None:
    """``answer_now`` adds what the app's two hooks add to a public document without running
    them: an app with other hooks, or a path answered at once that is not a public document, is
    refused when it is built."""

    async def other(message: Any, scope: Any) -> None:
        return None

    with pytest.raises(ValueError, match="public documents"):
        IssuerApp(route_handlers=[], before_send=[common_headers, other], now=NOW)
    with pytest.raises(ValueError, match="public documents"):
        IssuerApp(
            route_handlers=[], before_send=[common_headers, cors_headers], now={("/token", "GET"): jwks_now}
        )
    IssuerApp(route_handlers=[], before_send=[other], now={})  # nothing answered at once: any hooks
