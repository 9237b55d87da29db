"""``issuer serve`` without ISSUER_URL advertises where it listens (issue 9, point 6): the metadata's
``issuer``, the tokens' ``iss`` and their default ``aud`` follow ``--host`` and ``--port``, in one
process and in every worker of ``--workers N``; a host that is not loopback is refused in one line."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest

from issuer.deployment import default_url
from tests import support


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8123, "http://127.0.0.1:8123"),  # the default --host
        ("0.0.0.0", 8000, "http://127.0.0.1:8000"),  # every IPv4 interface: loopback is one of them
        ("", 9000, "http://127.0.0.1:9000"),  # every interface
        ("localhost", 8123, "http://127.0.0.1:8123"),  # uvicorn listens on 127.0.0.1 for it
        ("127.8.9.10", 8123, "http://127.8.9.10:8123"),  # another loopback address: that one
        ("::", 8123, "http://[::1]:8123"),  # every IPv6 interface: asyncio listens IPv6-only
        ("::1", 8123, "http://[::1]:8123"),
        ("[::1]", 8123, "http://[::1]:8123"),
        ("10.0.0.5", 8443, "http://10.0.0.5:8443"),  # a specific host: itself (then refused, below)
        ("2001:db8::1", 8000, "http://[2001:db8::1]:8000"),
        ("issuer.internal", 8000, "http://issuer.internal:8000"),
    ],
)
def test_the_default_url_is_where_the_server_listens(host: str, port: int, url: str) -> None:
    assert default_url(host, port) == url


def _unset_url_server(env: dict[str, str], *args: str) -> support.ServerProcess:
    """A server without ISSUER_URL, on a free port that is not the default 8000."""
    port = next(port for port in iter(support.free_port, None) if port != 8000)
    server = support.ServerProcess(env, port=port, args=args)
    server.env.pop("ISSUER_URL")  # ServerProcess sets it by default; this test is about its absence
    return server


def _advertised(server: support.ServerProcess, client: tuple[str, str]) -> tuple[str, dict[str, str]]:
    """The metadata's ``issuer`` and the claims of a fresh client-credentials token (one connection)."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        metadata = http.get("/.well-known/oauth-authorization-server")
        token = http.post("/token", data={"grant_type": "client_credentials"}, auth=client)
    assert metadata.status_code == 200 and token.status_code == 200, token.text
    claims = jwt.decode(token.json()["access_token"], options={"verify_signature": False})
    return metadata.json()["issuer"], claims


def test_serve_without_issuer_url_advertises_its_port(server_env: dict[str, str], tmp_path: Path) -> None:
    client = support.register_client(server_env, grants=("client_credentials",))
    server = _unset_url_server(server_env).start(tmp_path / "server.log")
    try:
        issuer, claims = _advertised(server, client)
    finally:
        server.stop()
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert issuer == server.url
    assert claims["iss"] == server.url
    assert claims["aud"] == server.url  # ISSUER_DEFAULT_AUDIENCE defaults to the issuer URL
    assert f"ISSUER_URL={server.url} is not https" in server.log()  # loopback http: a warning


def test_every_worker_advertises_the_port(pg_url: str, tmp_path: Path, key_env: dict[str, str]) -> None:
    """The workers build their settings from the environment they inherit: the same default.
    (Without Redis: workers need only PostgreSQL, and Redis plays no part in the URL.)"""
    env = support.issuer_env(pg_url, tmp_path / "keys", **key_env)
    client = support.register_client(env, grants=("client_credentials",))
    server = _unset_url_server(env, "--workers", "2").start(tmp_path / "server.log")
    try:
        answers = [_advertised(server, client) for _ in range(6)]  # new connections, either worker
    finally:
        server.stop()
    assert {issuer for issuer, _ in answers} == {server.url}
    assert {claims["iss"] for _, claims in answers} == {server.url}


def test_serve_without_issuer_url_on_a_host_that_is_not_loopback_is_refused(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """``--host 10.0.0.5`` would advertise http://10.0.0.5:PORT: the insecure-URL rule refuses it in
    one line, before listening, and says where the URL came from."""
    port = support.free_port()
    result = support.run_cli(server_env, "serve", "--host", "10.0.0.5", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"issuer: error: bad setting: ISSUER_URL=http://10.0.0.5:{port} is http")
    assert "ISSUER_ALLOW_INSECURE_URL=true" in lines[0] and "ISSUER_URL is unset" in lines[0]
