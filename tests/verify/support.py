"""Helpers for the resource-server tests: a running issuer per algorithm, a client of it, its
tokens, its active private key (read back from the issuer's SQLite file and unsealed with the
test's key-encryption key, so forgeries can be signed by the real key where a case needs it), and
a tiny HTTP server that counts the requests it serves."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from issuer.keys.material import b64decode
from issuer.keys.ring import unseal
from tests import support


@dataclass
class Issuer:
    server: support.ServerProcess
    alg: str
    client_id: str
    client_secret: str

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, scope: str | None = None) -> str:
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        response = support.post(self.url + "/token", data=data, auth=(self.client_id, self.client_secret))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def signing_key(self) -> tuple[str, Any]:
        """(kid, private key) of the issuer's active key."""
        db = self.server.env["ISSUER_DATABASE_URL"].removeprefix("sqlite:///")
        with sqlite3.connect(db) as conn:
            kid, alg, sealed = conn.execute(
                "SELECT kid, alg, private_key FROM signing_keys WHERE state = 'active'"
            ).fetchone()
        kek = b64decode(self.server.env["ISSUER_KEY_ENCRYPTION_KEY"])
        return kid, unseal(kek, sealed, kid, alg)

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """A token signed by the issuer's real key with the given claims and header members."""
        kid, key = self.signing_key()
        headers = {"kid": kid, "typ": "at+jwt", **header}
        return jwt.encode(claims, key, algorithm=self.alg, headers=headers)

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.url,
            "sub": "alice",
            "aud": self.url,
            "exp": now + 300,
            "iat": now,
            "jti": "forged-" + str(now),
            "client_id": self.client_id,
            "scope": "notes:read",
        }
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}


def register_client(env: dict[str, str], *extra: str) -> tuple[str, str]:
    return support.register_client(
        env, *extra, name="resource-tests", grants=("client_credentials",), scope="notes:read notes:write"
    )


class Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, Callable[[], tuple[int, dict[str, str], bytes]]]) -> None:
        self.routes = routes
        self.hits: Counter[str] = Counter()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Counting

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.hits[path] += 1
        route = self.server.routes.get(path)
        status, headers, body = route() if route else (404, {}, b"")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def counting_server(routes: dict[str, Callable[[], tuple[int, dict[str, str], bytes]]]) -> Iterator[Counting]:
    httpd = Counting(routes)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
