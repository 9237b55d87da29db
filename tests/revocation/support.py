"""Helpers of the revocation tests: a deployment (database, optional Redis, servers, CLI) and
small HTTP calls for /token, /revoke and /introspect."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import redis

from issuer_verify.denylist import RedisDenylist
from tests import support

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.client_id, self.secret)


@dataclass
class Deployment:
    """One issuer deployment: a database, maybe Redis, its key material, servers started on demand."""

    env: dict[str, str]
    tmp: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def cli(self, *args: str, input: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = support.run_cli_here(self.env, *args, input=input)
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    def client(self, name: str, *grants: str, scope: str = "read", introspect: bool = False) -> Client:
        args = ["clients", "create", "--json", "--name", name, "--scope", scope]
        for grant in grants:
            args += ["--grant", grant]
        if introspect:
            args.append("--can-introspect")
        body = json.loads(self.cli(*args).stdout)
        return Client(body["client_id"], body["client_secret"])

    def user(self, username: str) -> str:
        out = self.cli("users", "create", "--username", username, input=PASSWORD + "\n").stdout
        return out.strip().rsplit(" ", 1)[-1]  # "user U created with subject usr_..."

    def serve(self, name: str, **extra: str) -> support.ServerProcess:
        return self.stack.enter_context(
            support.running_server(dict(self.env, **extra), self.tmp / f"{name}.log")
        )


def login(url: str, client: Client, username: str = "alice") -> dict[str, Any]:
    response = support.post(
        url + "/token",
        auth=client.auth,
        data={"grant_type": "password", "username": username, "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def refresh(url: str, client: Client, refresh_token: str) -> httpx.Response:
    return support.post(
        url + "/token", auth=client.auth, data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def revoke(url: str, client: Client, token: str, hint: str | None = None) -> httpx.Response:
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    return support.post(url + "/revoke", auth=client.auth, data=data)


def introspect_response(url: str, client: Client, token: str, hint: str | None = None) -> httpx.Response:
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    return support.post(url + "/introspect", auth=client.auth, data=data)


def introspect(url: str, client: Client, token: str, hint: str | None = None) -> dict[str, Any]:
    response = introspect_response(url, client, token, hint)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def active(url: str, client: Client, token: str) -> bool:
    return bool(introspect(url, client, token)["active"])


def until(predicate: Any, hang_guard: float = 15.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds; the deadline only keeps a broken build from hanging."""
    deadline = time.monotonic() + hang_guard
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@contextlib.contextmanager
def resource_server_copy(redis_url: str, prefix: str) -> Iterator[RedisDenylist]:
    """What a resource server runs: issuer_verify's denylist copy fed by the issuer's Redis,
    started and fully loaded (its reconnection made quick for the tests)."""
    copy = RedisDenylist(redis_url, prefix=prefix, heartbeat=0.2, reconnect_delay=0.1)
    copy.start()
    try:
        assert copy.wait_ready(15), "the denylist copy never loaded"
        yield copy
    finally:
        copy.close()


def refused(copy: RedisDenylist, token: str) -> bool:
    """Whether the copy refuses ``token`` as revoked (the check a verifier runs on it)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return copy.check(jwt.get_unverified_header(token)["kid"], claims) == "revoked"


class RedisServer:
    """A throwaway ``redis-server`` on a free port (no persistence), for tests that stop or flush it."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or support.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=str(self.tmp),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            assert until(lambda: self._ping(client), hang_guard=10), "redis-server did not start"
        finally:
            client.close()
        return self

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp).start()
    try:
        yield server
    finally:
        server.stop()
