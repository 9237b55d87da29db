"""The floor programs of ``../shared/bench/LIMITS.md`` (issue 12): what the token endpoint and JWKS
would cost with nothing but uvicorn and the signature, measured by ``bench/token_load.sh`` in the
same run as the issuer.

A bare ASGI app, no framework: ``POST /token`` reads the whole form body and answers one
ES256-signed access token (RFC 9068 claims of the issuer's shape, signed the way
:class:`issuer.keys.ring.Signer` signs: the header encoded once, PyJWT's algorithm object over
``header.payload``) as ``application/json`` with ``Cache-Control: no-store``; ``GET /jwks``
answers fixed JWKS bytes. It authenticates no client and parses no form: it is a lower bound,
not a server.

    taskset -c 0 .venv/bin/python bench/floor_app.py --port 8099
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.utils import base64url_encode

_KEY = ec.generate_private_key(ec.SECP256R1())
_ALG = ECAlgorithm(ECAlgorithm.SHA256)
_KID = "floor"
_HEADER = base64url_encode(
    json.dumps({"alg": "ES256", "kid": _KID, "typ": "at+jwt"}, separators=(",", ":")).encode()
)
_JWK = json.loads(ECAlgorithm.to_jwk(_KEY.public_key()))
_JWKS = json.dumps(
    {"keys": [{**_JWK, "alg": "ES256", "kid": _KID, "use": "sig"}]}, separators=(",", ":")
).encode()
_TOKEN_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
]
_JWKS_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"public, max-age=300")]


def _token() -> bytes:
    now = int(time.time())
    claims = {
        "iss": "http://127.0.0.1",
        "sub": "cli_floor",
        "aud": "http://127.0.0.1/api",
        "client_id": "cli_floor",
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
        "scope": "read write",
    }
    signing_input = _HEADER + b"." + base64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    jwt = signing_input + b"." + base64url_encode(_ALG.sign(signing_input, _KEY))
    body = {"access_token": jwt.decode(), "token_type": "Bearer", "expires_in": 300, "scope": "read write"}
    return json.dumps(body, separators=(",", ":")).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] == "/token":
        more = True
        while more:  # the whole body, as a form endpoint must read it
            message = await receive()
            more = message.get("more_body", False)
        status, headers, body = 200, _TOKEN_HEADERS, _token()
    elif scope["method"] == "GET" and scope["path"] == "/jwks":
        status, headers, body = 200, _JWKS_HEADERS, _JWKS
    else:
        status, headers, body = 404, [], b""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
