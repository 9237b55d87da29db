"""A test API behind the BFF: verifies the bearer token with ``issuer_verify`` and echoes what it
saw (``sub``, ``jti``, ``exp``, method, path, query, body, header names), never the token. It also
sets a cookie, which the BFF must not pass on.

Run as ``uvicorn tests.bff.upstream:app`` with ``UPSTREAM_ISSUER`` and ``UPSTREAM_AUDIENCE``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from issuer_verify import InvalidToken, Verifier

_verifier: Verifier | None = None


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
    body = await _body(receive)
    status, answer = 200, {}
    if scope["path"] == "/ready":
        answer = {"ready": True}
    else:
        auth = headers.get("authorization", "")
        try:
            if not auth.startswith("Bearer "):
                raise InvalidToken("missing", "no bearer")
            claims = await _get_verifier().verify_async(auth[7:])
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
    payload = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"set-cookie", b"upstream=1; Path=/"),
                (b"x-upstream", b"yes"),
                (b"access-control-allow-origin", b"*"),
                (b"connection", b"x-hop"),
                (b"x-hop", b"dropped"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
