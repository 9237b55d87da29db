"""The BFF's end-to-end setting: a real ``issuer serve``, a real ``issuer bff serve`` (one or two),
a test upstream (:mod:`tests.bff.upstream`), and an HTTP-level browser that follows redirects
across them, fills the issuer's login form, and keeps every answer it saw (to look for tokens)."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urljoin

import httpx

from issuer.keys.material import b64encode
from issuer.store import migrations
from tests import support
from tests.signin.browser import form_fields

__all__ = ["TOKEN_SHAPES", "BffProcess", "SpaBrowser", "Upstream", "leaks"]

# What a token looks like: a JWT (access or id token), the issuer's refresh tokens.
TOKEN_SHAPES = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+|irt_[A-Za-z0-9_-]{20,}")


def issuer_env(directory: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``issuer serve`` behind a BFF: a migrated SQLite database in
    ``directory``, fresh key-encryption and HMAC keys, and ``extra`` settings."""
    url = f"sqlite:///{directory / 'issuer.db'}"
    migrations.upgrade(url)
    return support.issuer_env(
        url,
        directory / "keys",
        ISSUER_KEY_ENCRYPTION_KEY=b64encode(secrets.token_bytes(32)),
        ISSUER_HMAC_KEY=b64encode(secrets.token_bytes(32)),
        **extra,
    )


class _Process:
    """A subprocess on a free port, ready when ``ready_path`` answers, stopped with SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, ready_path: str, log: Path) -> None:
        self.argv, self.env, self.port, self.ready_path, self.log_path = argv, env, port, ready_path, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> _Process:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.log_path.parent)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log()}")
            if support.listens(self.proc.pid, self.port):  # not another process on the port
                try:
                    if support.get(self.url + self.ready_path, timeout=1).status_code in (200, 401):
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.argv} did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class BffProcess(_Process):
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        argv = [
            support.ISSUER_BIN,
            "bff",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "info",
        ]
        super().__init__(argv, env, port, "/bff/user", log)


class Upstream(_Process):
    def __init__(self, issuer_url: str, log: Path) -> None:
        port = support.free_port()
        env = {"UPSTREAM_ISSUER": issuer_url, "UPSTREAM_AUDIENCE": issuer_url, "PATH": "/usr/bin:/bin"}
        argv = [
            sys.executable, "-m", "uvicorn", "tests.bff.upstream:app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
        super().__init__(argv, {**env, "PYTHONPATH": str(support.ROOT)}, port, "/ready", log)


@dataclass
class Seen:
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: str


@dataclass
class SpaBrowser:
    """A browser's cookie jar over plain HTTP (``__Host-`` and ``Secure`` cookies kept and sent
    explicitly: on loopback browsers treat http as secure); one jar for every origin on 127.0.0.1,
    as browsers share cookies across ports."""

    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, trust_env=False))
    cookies: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    cookie_lines: list[str] = field(default_factory=list)

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.http.request(method, url, headers=headers, follow_redirects=False, **kwargs)  # type: ignore[arg-type]
        for line in response.headers.get_list("set-cookie"):
            self.cookie_lines.append(line)
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value or morsel.value == '""':
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        self.seen.append(Seen(url, response.status_code, list(response.headers.multi_items()), response.text))
        return response

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def sign_in(self, bff_url: str, return_to: str = "/app", username: str = "alice") -> httpx.Response:
        """/bff/login → the issuer → its login form → /bff/callback; returns the callback's answer."""
        response = self.get(f"{bff_url}/bff/login", params={"return_to": return_to})
        url = f"{bff_url}/bff/login"
        for _ in range(10):
            if response.status_code == 303:
                url = urljoin(url, response.headers["location"])
                if url.startswith(bff_url + "/bff/callback"):
                    return self.get(url)
                response = self.get(url)
            elif response.status_code == 200 and 'name="password"' in response.text:
                fields = form_fields(response.text).inputs
                form = {
                    "username": username,
                    "password": support.PASSWORD,
                    "request": fields["request"],
                    "csrf": fields["csrf"],
                }
                url = urljoin(url, "/login")
                response = self.request("POST", url, data=form)
            else:
                raise AssertionError(
                    f"unexpected answer {response.status_code} at {url}: {response.text[:300]}"
                )
        raise AssertionError("the sign-in did not reach /bff/callback")

    def call(self, url: str, method: str = "GET", csrf: bool = True, **kwargs: object) -> httpx.Response:
        headers = {"x-csrf": "1"} if csrf else {}
        return self.request(method, url, headers=headers, **kwargs)


def leaks(seen: list[Seen], origin: str) -> list[str]:
    """Every token-shaped string in what ``origin`` sent the browser (headers and bodies)."""
    found = []
    for answer in seen:
        if not answer.url.startswith(origin):
            continue
        text = answer.body + "\n".join(f"{k}: {v}" for k, v in answer.headers)
        found += [f"{answer.url}: {m}" for m in TOKEN_SHAPES.findall(text)]
    return found
