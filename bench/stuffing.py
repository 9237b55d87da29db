"""Credential stuffing against one ``issuer serve``, and what a real user feels meanwhile.

For ``--seconds`` (20), ``--concurrency`` attackers post password-grant attempts with a new
username each time (and a wrong password) from ``--addresses`` loopback addresses (1: one
address; more: 127.0.1.1, 127.0.1.2, ... in turn), at most ``--max-attempts`` in all, from a
process of their own. Meanwhile a real user logs in every ``--probe-interval`` seconds (eight
users from twenty addresses in turn, so that the probe stays under every limit of its own).
Before the attack the same probe runs alone for ``--quiet-seconds`` (5) for its quiet latency.

The server runs with the default settings (argon2id 19 MiB, t=2; the rate limits' defaults of
the code under test), SQLite in a temporary directory and the local Redis
(``ISSUER_TEST_REDIS_URL``) under a prefix of its own, deleted at the end. ``--issuer`` picks the
``issuer`` executable, so the same script measures another commit's package (its own venv)::

    .venv/bin/python bench/stuffing.py                                   # this tree
    .venv/bin/python bench/stuffing.py --issuer /tmp/base/.venv/bin/issuer  # e.g. the base commit
    .venv/bin/python bench/stuffing.py --addresses 64                    # a spread-out attack

It prints: attempts and their answers (400 = argon2 ran and said no, 429, 503), argon2
verifications (the server's own count: ``issuer_password_verifications_total`` from
``/metrics``, or, for code without that metric, the password requests answered 200 or 400,
which each ran one), server CPU seconds (``/proc/PID/stat``) during the attack, and the real
user's login latency p50 / max and answers, quiet and under attack. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import support

METRICS_TOKEN = "bench-" + secrets.token_urlsafe(16)
PASSWORD = support.PASSWORD


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            values[name] = values.get(name, 0.0) + float(number)
    return values


def argon2_count(values: dict[str, float]) -> float:
    direct = [v for k, v in values.items() if k.startswith("issuer_password_verifications_total")]
    if direct:
        return sum(direct)
    return sum(  # older code: every password request answered 200 or 400 ran one verification
        v
        for k, v in values.items()
        if k.startswith("issuer_http_responses_total")
        and 'endpoint="/token"' in k
        and ('status="200"' in k or 'status="400"' in k)
    )


def cli(issuer: str, env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [issuer, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise SystemExit(f"issuer {' '.join(args)} failed: {result.stderr}")
    return result.stdout


PROBE_USERS = 8
PROBE_ADDRESSES = 20


async def probe(url: str, auth: tuple[str, str], until: float, interval: float) -> list[tuple[float, int]]:
    """Real users' logins, (seconds, status) each: ``alice0..7`` in turn, from 127.0.2.1-20 in
    turn, so that no real user or address comes near a limit of its own."""
    samples: list[tuple[float, int]] = []
    clients = [
        httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=f"127.0.2.{i + 1}"), timeout=60)
        for i in range(PROBE_ADDRESSES)
    ]
    try:
        while time.monotonic() < until:
            n = len(samples)
            started = time.perf_counter()
            response = await clients[n % PROBE_ADDRESSES].post(
                url + "/token",
                auth=auth,
                data={"grant_type": "password", "username": f"alice{n % PROBE_USERS}", "password": PASSWORD},
            )
            samples.append((time.perf_counter() - started, response.status_code))
            await asyncio.sleep(interval)
    finally:
        for client in clients:
            await client.aclose()
    return samples


async def attack(
    url: str, auth: tuple[str, str], until: float, concurrency: int, addresses: int, max_attempts: int
) -> dict[int, int]:
    sources = ["127.0.0.1"] if addresses == 1 else [f"127.0.1.{i + 1}" for i in range(addresses)]
    clients = [
        httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=source), timeout=60)
        for source in sources
    ]
    statuses: dict[int, int] = {}
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while time.monotonic() < until and sent < max_attempts:
            n = sent
            sent += 1
            form = {"grant_type": "password", "username": f"stuffed{n}@example.com", "password": "Summer26!"}
            try:
                response = await clients[n % len(clients)].post(url + "/token", auth=auth, data=form)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            except httpx.HTTPError:
                statuses[0] = statuses.get(0, 0) + 1

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return statuses


def run_attack(
    url: str, auth: tuple[str, str], until: float, concurrency: int, addresses: int, max_attempts: int
) -> dict[int, int]:
    return asyncio.run(attack(url, auth, until, concurrency, addresses, max_attempts))


def latency(samples: list[tuple[float, int]]) -> str:
    if not samples:
        return "no samples"
    times = [s for s, _ in samples]
    answers: dict[int, int] = {}
    for _, status in samples:
        answers[status] = answers.get(status, 0) + 1
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
    return f"p50 {statistics.median(times) * 1000:7.1f} ms  max {max(times) * 1000:7.1f} ms  ({shown})"


async def measure(url: str, pid: int, auth: tuple[str, str], args: argparse.Namespace) -> None:
    quiet = await probe(url, auth, time.monotonic() + args.quiet_seconds, args.probe_interval)
    before, cpu_before = metrics(url), cpu_seconds(pid)
    started = time.monotonic()
    until = started + args.seconds
    # the attackers in a process of their own, so that their event loop does not slow the probe's
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        statuses, loaded = await asyncio.gather(
            asyncio.get_running_loop().run_in_executor(
                pool, run_attack, url, auth, until, args.concurrency, args.addresses, args.max_attempts
            ),
            probe(url, auth, until, args.probe_interval),
        )
    elapsed = time.monotonic() - started
    after, cpu_after = metrics(url), cpu_seconds(pid)
    argon2 = argon2_count(after) - argon2_count(before)
    attempts = sum(statuses.values())
    shown = ", ".join(f"{k or 'error'}: {v}" for k, v in sorted(statuses.items()))
    print(f"attack: {attempts} attempts in {elapsed:.1f} s from {args.addresses} address(es) ({shown})")
    print(f"argon2 verifications during the attack (server count, probe included): {argon2:.0f}")
    print(f"server CPU during the attack: {cpu_after - cpu_before:.1f} s")
    print(f"real user's login, quiet:        {latency(quiet)}")
    print(f"real user's login, under attack: {latency(loaded)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--issuer", default=str(Path(sys.executable).with_name("issuer")))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quiet-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--addresses", type=int, default=1, choices=range(1, 255), metavar="1-254")
    parser.add_argument("--max-attempts", type=int, default=20_000)
    parser.add_argument("--probe-interval", type=float, default=0.5)
    args = parser.parse_args()
    prefix = f"bench-stuffing:{os.getpid()}:{secrets.token_hex(3)}:"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
        env.update(
            ISSUER_DATABASE_URL=f"sqlite:///{work / 'issuer.db'}",
            ISSUER_KEYS_DIR=str(work / "keys"),
            ISSUER_KEY_ENCRYPTION_KEY=support.test_key(),
            ISSUER_HMAC_KEY=support.test_key(),
            ISSUER_REDIS_URL=support.REDIS_URL,
            ISSUER_REDIS_PREFIX=prefix,
            ISSUER_METRICS_TOKEN=METRICS_TOKEN,
        )

        created = json.loads(
            cli(args.issuer, env, work, "clients", "create", "--json", "--name", "app", "--grant", "password")
        )
        auth = (created["client_id"], created["client_secret"])
        for i in range(PROBE_USERS):
            cli(args.issuer, env, work, "users", "create", "--username", f"alice{i}", stdin=PASSWORD + "\n")
        port = support.free_port()
        env["ISSUER_URL"] = f"http://127.0.0.1:{port}"
        log = (work / "server.log").open("wb")
        server = subprocess.Popen(
            [args.issuer, "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = env["ISSUER_URL"]
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("issuer serve did not start:\n" + (work / "server.log").read_text())
                time.sleep(0.1)
            print(f"{args.issuer}: {args.concurrency} attackers, {args.seconds:.0f} s")
            asyncio.run(measure(url, server.pid, auth, args))
        finally:
            server.terminate()
            server.wait(timeout=15)
            log.close()
            admin = redis.Redis.from_url(support.REDIS_URL)
            keys = list(admin.scan_iter(match=prefix + "*", count=1000))
            if keys:
                admin.delete(*keys)
            admin.close()


if __name__ == "__main__":
    main()
