"""Browser sign-in on one core, driven by a scripted client (no browser), on PostgreSQL.

    .venv/bin/python bench/signin_load.py [--connections 8] [--duration 10] [--runs 3] [--profile DIR]

Every run from scratch: a fresh PostgreSQL database on the server of ``ISSUER_TEST_DATABASE_URL``
(as the tests; default postgresql://postgres@127.0.0.1:5432/postgres), ``issuer db upgrade``, a
first-party public client (authorization_code + refresh_token, redirect URI on loopback) and a confidential
client_credentials client, one user; ``issuer serve`` pinned to CPU 0, this load generator pinned
to CPU 1. The scenarios, each a warm-up and ``--runs`` measured runs of ``--duration`` seconds at
``--connections`` concurrent flows (the median run is printed):

- ``signin``: the whole sign-in of a new browser: ``GET /authorize`` (303 to the login page),
  ``GET /login``, ``POST /login`` with the password (argon2 at the default cost, as in
  production; 303 with the code), ``POST /token`` with the code and the PKCE verifier;
- ``sso``: a browser that is already signed in: ``GET /authorize`` (303 with the code at once)
  and ``POST /token``;
- ``exchange``: the code exchange alone (codes minted beforehand through ``sso``'s authorize);
- ``refresh``: a refresh-token rotation of the same public client (one chain per connection), in
  the same run, for issue 12's "the exchange within 10% of a rotation";
- ``cc``: ``client_credentials``, in the same run, for the ratio.

Figures: flows (or requests) per wall second and per server CPU-second (``/proc``: the server's
user + system time), p50 and p99 of the whole flow. With ``--profile DIR``, py-spy (in this
venv) samples the server during each scenario's last measured run (not while codes are minted)
and writes ``DIR/NAME.txt`` (collapsed stacks, for ``bench/profile_top.py``); py-spy shares the
load generator's CPU, so read rates from a run without it. The password rate limits are off (one user
signing in thousands of times is what they refuse). Everything it created is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from issuer.signin.pkce import s256

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
ADMIN = os.environ.get("ISSUER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1/cb"  # loopback: matches on any port; never contacted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Browser:
    """One browser: its cookies (sent explicitly: they are Secure, the issuer is http loopback)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.cookies: dict[str, str] = {}

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for line in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value
        return response

    def _headers(self) -> dict[str, str]:
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    async def get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self._keep(await self.http.get(url, params=params, headers=self._headers()))

    async def post(self, url: str, data: dict[str, str]) -> httpx.Response:
        return self._keep(await self.http.post(url, data=data, headers=self._headers()))


def _hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def _code_of(response: httpx.Response) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:300])
    return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]


class Flows:
    def __init__(self, http: httpx.AsyncClient, client_id: str, cc: tuple[str, str]) -> None:
        self.http = http
        self.client_id = client_id
        self.cc = cc

    def _authorize_params(self) -> tuple[dict[str, str], str]:
        verifier = secrets.token_urlsafe(48)
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": REDIRECT,
            "scope": "openid read",
            "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }, verifier

    async def _exchange(self, code: str, verifier: str) -> str:
        answer = await self.http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": self.client_id,
            },
        )
        assert answer.status_code == 200, answer.text
        assert "id_token" in answer.json()
        return str(answer.json()["refresh_token"])

    async def refresh(self, token: str) -> str:
        answer = await self.http.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": token, "client_id": self.client_id},
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["refresh_token"])

    async def signin(self) -> None:
        browser = Browser(self.http)
        params, verifier = self._authorize_params()
        first = await browser.get("/authorize", params)
        assert first.status_code == 303 and first.headers["location"].startswith("/login"), first.text[:300]
        page = await browser.get(first.headers["location"])
        answer = await browser.post(
            "/login",
            {
                "username": "alice",
                "password": PASSWORD,
                "request": _hidden(page.text, "request"),
                "csrf": _hidden(page.text, "csrf"),
            },
        )
        await self._exchange(_code_of(answer), verifier)

    async def signed_in(self) -> Browser:
        browser = Browser(self.http)
        params, _ = self._authorize_params()
        first = await browser.get("/authorize", params)
        page = await browser.get(first.headers["location"])
        await browser.post(
            "/login",
            {
                "username": "alice",
                "password": PASSWORD,
                "request": _hidden(page.text, "request"),
                "csrf": _hidden(page.text, "csrf"),
            },
        )
        return browser

    async def sso(self, browser: Browser) -> None:
        params, verifier = self._authorize_params()
        await self._exchange(_code_of(await browser.get("/authorize", params)), verifier)

    async def mint_code(self, browser: Browser) -> tuple[str, str]:
        params, verifier = self._authorize_params()
        return _code_of(await browser.get("/authorize", params)), verifier

    async def client_credentials(self) -> None:
        answer = await self.http.post("/token", data={"grant_type": "client_credentials"}, auth=self.cc)
        assert answer.status_code == 200, answer.text


async def measure(
    flow: Callable[[int], Awaitable[bool | None]], *, pid: int, connections: int, duration: float
) -> dict[str, float]:
    latencies: list[float] = []
    stop = time.monotonic() + duration
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()

    async def worker(index: int) -> None:
        n = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            if await flow(index * 1_000_000 + n) is False:  # out of material (codes): the run ends
                return
            latencies.append(time.perf_counter() - started)
            n += 1

    await asyncio.gather(*(worker(i) for i in range(connections)))
    wall, cpu = time.monotonic() - wall0, cpu_seconds(pid) - cpu0
    latencies.sort()
    return {
        "count": len(latencies),
        "per_s": len(latencies) / wall,
        "per_cpu_s": len(latencies) / cpu if cpu else float("nan"),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def mint(flows: Flows, browsers: list[Browser], need: int) -> list[tuple[str, str]]:
    """``need`` codes, one minting loop per browser (thousands of queued requests on one httpx
    pool would cost the load generator more than the server)."""
    minted: list[tuple[str, str]] = []

    async def loop(browser: Browser, count: int) -> None:
        for _ in range(count):
            minted.append(await flows.mint_code(browser))

    share = -(-need // len(browsers))
    await asyncio.gather(*(loop(browser, share) for browser in browsers))
    return minted


def start_profile(directory: str | None, name: str, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server into ``directory/name.txt`` until :func:`stop_profile`."""
    if directory is None:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--nonblocking", "-o", str(Path(directory) / f"{name}.txt")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        profiler.wait(timeout=60)


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    return sorted(runs, key=lambda run: run["per_cpu_s"])[len(runs) // 2]


async def run_all(base: str, pid: int, client_id: str, cc: tuple[str, str], args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        flows = Flows(http, client_id, cc)
        browsers = [await flows.signed_in() for _ in range(args.connections)]
        codes: list[tuple[str, str]] = []

        async def exchange(_: int) -> bool:
            if not codes:
                return False
            code, verifier = codes.pop()
            await flows._exchange(code, verifier)
            return True

        chains: list[str] = []  # one refresh token per connection, rotated in place

        async def rotate(i: int) -> None:
            index = i // 1_000_000
            chains[index] = await flows.refresh(chains[index])

        for browser in browsers:
            chains.append(await flows._exchange(*await flows.mint_code(browser)))

        scenarios: dict[str, Callable[[int], Awaitable[bool | None]]] = {
            "signin": lambda _: flows.signin(),
            "sso": lambda i: flows.sso(browsers[i // 1_000_000]),
            "exchange": exchange,
            "refresh": rotate,
            "cc": lambda _: flows.client_credentials(),
        }
        results: dict[str, dict[str, float]] = {}
        for name, flow in scenarios.items():
            if name not in args.scenarios:
                continue
            runs = []
            for attempt in range(args.runs + 1):  # the first is the warm-up
                if name == "exchange":  # codes for the run (generously many), minted unmeasured
                    need = int(args.expected_exchanges * args.duration)
                    codes[:] = await mint(flows, browsers, need)
                profiler = start_profile(args.profile, name, pid) if attempt == args.runs else None
                result = await measure(flow, pid=pid, connections=args.connections, duration=args.duration)
                stop_profile(profiler)
                if attempt:
                    runs.append(result)
            results[name] = median_run(runs)
            r = results[name]
            print(
                f"{name:9} {r['per_s']:8.0f}/s {r['per_cpu_s']:8.0f}/server-CPU-s "
                f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  (n={int(r['count'])})",
                flush=True,
            )
        for other in ("refresh", "cc"):
            if "exchange" not in results or other not in results:
                continue
            ratio = results["exchange"]["per_cpu_s"] / results[other]["per_cpu_s"]
            print(f"code exchange / {other}, per server CPU-second: {ratio:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--expected-exchanges",
        type=int,
        default=600,
        help="codes minted per second of an exchange run (a run ends early when they run out)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy samples the server during each scenario's last run into DIR/NAME.txt",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: text.split(","),
        default=["signin", "sso", "exchange", "refresh", "cc"],
        help="comma-separated subset to run (default: all), e.g. sso,exchange",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the load generator on CPU 1, the server on CPU 0

    db = f"issuer_signin_bench_{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="issuer-signin-bench."))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(
        ISSUER_DATABASE_URL=f"{ADMIN.rsplit('/', 1)[0]}/{db}",
        ISSUER_KEYS_DIR=str(work / "keys"),
        ISSUER_URL=base,
        ISSUER_RATE_LIMIT_PASSWORD="0",
        ISSUER_RATE_LIMIT_PASSWORD_ADDRESS="0",
        ISSUER_RATE_LIMIT_PASSWORD_GLOBAL="0",
        ISSUER_RATE_LIMIT_CLIENT="0",
        ISSUER_AUTHORIZATION_CODE_TTL="600",  # the exchange run's codes are minted before it starts
    )
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    server = None
    try:

        def cli(*argv: str, stdin: str | None = None) -> str:
            done = subprocess.run(
                [str(BIN / "issuer"), *argv],
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                sys.exit(f"issuer {' '.join(argv)}: {done.stderr.strip()}")
            return done.stdout

        cli("db", "upgrade")
        spa = json.loads(
            cli(
                "clients", "create", "--name", "spa", "--grant", "authorization_code", "--grant",
                "refresh_token", "--redirect-uri", REDIRECT, "--public", "--first-party",
                "--scope", "openid read", "--json",
            )
        )  # fmt: skip
        m2m = json.loads(cli("clients", "create", "--name", "m2m", "--grant", "client_credentials", "--json"))
        cli("users", "create", "--username", "alice", stdin=PASSWORD + "\n")
        log = (work / "issuer.log").open("w")
        server = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                str(BIN / "issuer"),
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                sys.exit((work / "issuer.log").read_text())
            time.sleep(0.1)
        print(
            f"issuer pid {server.pid} on CPU 0, {args.connections} connections, "
            f"{args.runs} x {args.duration:.0f} s (median run)",
            flush=True,
        )
        asyncio.run(
            run_all(base, server.pid, spa["client_id"], (m2m["client_id"], m2m["client_secret"]), args)
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
