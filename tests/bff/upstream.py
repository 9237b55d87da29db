"""A test API behind the BFF: verifies the bearer token with ``issuer_verify`` and echoes what it
saw (``sub``, ``jti``, ``exp``, method, path, query, body, header names), never the token. It also
sets cookies, which the BFF must not pass on, and a field twice (``X-Multi``).

Paths ending in these answer otherwise, to test the proxy's framing (after the token check):

- ``/gzip``: a fixed gzip body with ``Content-Length`` and ``Content-Encoding: gzip``
  (:data:`GZIPPED`), to be relayed byte for byte;
- ``/big?n=N[&length=1]``: ``N`` bytes in four body messages, without ``Content-Length``
  (chunked on the wire) unless ``length=1``;
- ``/drip?id=X[&length=1]``: :data:`FIRST` at once, then :data:`REST` when ``/release?id=X`` is
  called (or ``timed-out`` after 30 s): a proxy that buffers never shows the first part in time;
- ``/slow?id=X``: waits for ``/release?id=X`` (at most 30 s), then answers.

``/release?id=X`` and ``/ready`` need no token.

Run as ``uvicorn tests.bff.upstream:app`` with ``UPSTREAM_ISSUER`` and ``UPSTREAM_AUDIENCE``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from typing import Any
from urllib.parse import parse_qs

from issuer_verify import InvalidToken, Verifier

_verifier: Verifier | None = None
_released: dict[str, asyncio.Event] = {}

GZIPPED = gzip.compress(b"compressed by the upstream " * 20, mtime=0)
FIRST = b"first part;" * 10_000  # 110 kB: more than the proxy reads whole (proxy.SMALL)
REST = b"released"


def _get_verifier() -> Verifier:
    global _verifier
    if _verifier is None:
        _verifier = Verifier(issuer=os.environ["UPSTREAM_ISSUER"], audience=os.environ["UPSTREAM_AUDIENCE"])
    return _verifier


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _event(name: str) -> asyncio.Event:
    return _released.setdefault(name, asyncio.Event())


async def _wait(name: str) -> bytes:
    try:
        await asyncio.wait_for(_event(name).wait(), 30)
    except TimeoutError:
        return b"timed-out"
    finally:
        _released.pop(name, None)
    return REST


async def _start(send: Any, status: int, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"set-cookie", b"upstream=1; Path=/"),
        (b"set-cookie", b"other=2; Path=/"),
        (b"x-upstream", b"yes"),
        (b"x-multi", b"a"),
        (b"x-multi", b"b"),
        (b"access-control-allow-origin", b"*"),
        (b"connection", b"x-hop"),
        (b"x-hop", b"dropped"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _framed(path: str, query: dict[str, list[str]], send: Any) -> bool:
    """The framing paths (module docstring); False for any other path."""
    declared = query.get("length") == ["1"]
    if path.endswith("/gzip"):
        extra = [(b"content-encoding", b"gzip"), (b"content-length", str(len(GZIPPED)).encode())]
        await _start(send, 200, [(b"content-type", b"text/plain"), *extra])
        await send({"type": "http.response.body", "body": GZIPPED})
    elif path.endswith("/big"):
        size = int(query["n"][0])
        parts = [b"%d" % (i % 10) * (size // 4) for i in range(3)]
        parts.append(b"z" * (size - sum(map(len, parts))))
        length = [(b"content-length", str(size).encode())] if declared else []
        await _start(send, 200, [(b"content-type", b"application/octet-stream"), *length])
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path.endswith("/drip"):
        # Declared: the length of FIRST + REST (above the proxy's whole-read threshold).
        length = [(b"content-length", str(len(FIRST + REST)).encode())] if declared else []
        await _start(send, 200, [(b"content-type", b"text/plain"), *length])
        await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        await send({"type": "http.response.body", "body": await _wait(query["id"][0])})
    elif path.endswith("/slow"):
        body = await _wait(query["id"][0])
        await _start(send, 200, [(b"content-type", b"text/plain")])
        await send({"type": "http.response.body", "body": body})
    else:
        return False
    return True


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
    query = parse_qs(scope["query_string"].decode())
    body = await _body(receive)
    status, answer = 200, {}
    if scope["path"] == "/ready":
        answer = {"ready": True}
    elif scope["path"] == "/release":
        _event(query["id"][0]).set()
        answer = {"released": True}
    else:
        auth = headers.get("authorization", "")
        try:
            if not auth.startswith("Bearer "):
                raise InvalidToken("missing", "no bearer")
            claims = await _get_verifier().verify_async(auth[7:])
            if await _framed(scope["path"], query, send):
                return
            answer = {
                "sub": claims["sub"],
                "jti": claims["jti"],
                "exp": claims["exp"],
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                "query": scope["query_string"].decode(),
                "body": body.decode("latin-1"),
                "headers": sorted(headers),
            }
        except InvalidToken as error:
            status, answer = 401, {"error": error.reason}
    await _start(send, status, [(b"content-type", b"application/json")])
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
