"""What a rate-limit check costs on the token endpoint's path.

Prints, for ``--checks`` checks each (one client, distinct usernames so nothing is refused):

* the in-process sliding window (no Redis): microseconds per check;
* the Redis sliding window (one ``EVALSHA`` of :mod:`issuer.ratelimit`'s script per check), with
  one key (the per-client limit) and two keys (client + username/address, the password grant):
  microseconds per check one at a time (p50, p99) and checks per second with ``--concurrency``
  concurrent callers, next to a bare ``PING`` round trip on the same connection pool for scale;
* the observing middleware (request id, latency histogram, access-line check at ``warning``):
  microseconds it adds to a request, around a no-op ASGI app;
* with ``--http``: ``/token`` client-credentials requests per second against one ``issuer
  serve`` on SQLite + Redis, with ``ISSUER_RATE_LIMIT_CLIENT=0`` (no check) and with a per-client
  limit too high to refuse (one check per request), ``--seconds`` each.

    .venv/bin/python bench/ratelimit.py [--checks 20000] [--concurrency 16] [--http] [--seconds 5]

Uses the local Redis (``ISSUER_TEST_REDIS_URL``) under a key prefix of its own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from issuer.ratelimit import RateLimits
from issuer.store import migrations
from tests import support


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} us"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def sequential(limits: RateLimits, n: int, grant: str) -> list[float]:
    timings = []
    for i in range(n):
        started = time.perf_counter()
        await limits.check("cli_bench", grant, f"user{i}", "10.0.0.1")
        timings.append(time.perf_counter() - started)
    return timings


async def concurrent(limits: RateLimits, n: int, grant: str, concurrency: int) -> float:
    per_task = n // concurrency

    async def worker(w: int) -> None:
        for i in range(per_task):
            await limits.check("cli_bench", grant, f"user{w}.{i}", "10.0.0.1")

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - started)


async def ping_round_trip(limits: RateLimits, n: int) -> list[float]:
    client = limits.backend.redis  # type: ignore[union-attr]
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        await client.ping()
        timings.append(time.perf_counter() - started)
    return timings


async def checks(args: argparse.Namespace, prefix: str) -> None:
    big = 10_000_000
    local = RateLimits(client_limit=big, password_limit=big, window=60)
    timings = await sequential(local, args.checks, "password")
    print(
        f"in-process, client + password keys:   p50 {us(statistics.median(timings))}  "
        f"p99 {us(percentile(timings, 0.99))}"
    )
    shared = RateLimits(
        client_limit=big, password_limit=big, window=60, redis_url=support.REDIS_URL, prefix=prefix
    )
    try:
        await sequential(shared, 500, "password")  # warm-up: connection, script cached
        pings = await ping_round_trip(shared, args.checks // 4)
        print(
            f"Redis PING round trip (reference):    p50 {us(statistics.median(pings))}  "
            f"p99 {us(percentile(pings, 0.99))}"
        )
        for label, grant in (
            ("client key only", "client_credentials"),
            ("client + password keys", "password"),
        ):
            timings = await sequential(shared, args.checks // 2, grant)
            rate = await concurrent(shared, args.checks, grant, args.concurrency)
            print(
                f"Redis script, {label + ':':24s} p50 {us(statistics.median(timings))}  "
                f"p99 {us(percentile(timings, 0.99))}  {rate:9,.0f} checks/s with {args.concurrency} callers"
            )
    finally:
        await shared.close()


async def token_rate(url: str, auth: tuple[str, str], seconds: float, concurrency: int) -> tuple[float, int]:
    done = errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                response = await http.post(
                    url + "/token", auth=auth, data={"grant_type": "client_credentials"}
                )
                if response.status_code == 200:
                    done += 1
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started), errors


def http_comparison(args: argparse.Namespace, prefix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        database = f"sqlite:///{work / 'issuer.db'}"
        migrations.upgrade(database)
        base = support.issuer_env(
            database,
            work / "keys",
            ISSUER_REDIS_URL=support.REDIS_URL,
            ISSUER_REDIS_PREFIX=prefix,
            ISSUER_KEY_ENCRYPTION_KEY=support.test_key(),
            ISSUER_HMAC_KEY=support.test_key(),
        )
        created = support.run_cli(
            base, "clients", "create", "--json", "--name", "bench", "--grant", "client_credentials", cwd=work
        )
        body = json.loads(created.stdout)
        auth = (body["client_id"], body["client_secret"])
        for label, limit in (("no per-client limit", "0"), ("per-client limit, 1 check", "10000000")):
            env = dict(base, ISSUER_RATE_LIMIT_CLIENT=limit)
            with support.running_server(env, work / f"server-{limit}.log") as server:
                asyncio.run(token_rate(server.url, auth, 1.0, args.concurrency))  # warm-up
                rate, errors = asyncio.run(token_rate(server.url, auth, args.seconds, args.concurrency))
            print(
                f"/token client_credentials, {label + ':':27s} {rate:7,.0f} requests/s "
                f"({args.concurrency} concurrent, {args.seconds:.0f} s, {errors} errors)"
            )


async def middleware_overhead(n: int) -> tuple[float, float]:
    """Seconds per call of a no-op ASGI app, bare and wrapped in :func:`issuer.http.observe.observe`."""
    import logging
    from types import SimpleNamespace

    from issuer.http.observe import observe
    from issuer.observability.metrics import Metrics

    logging.getLogger("issuer.access").setLevel(logging.WARNING)  # as a benchmarked server runs
    state = SimpleNamespace(runtime=SimpleNamespace(metrics=Metrics()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/token",
        "headers": [(b"host", b"x"), (b"content-type", b"application/x-www-form-urlencoded")],
        "app": SimpleNamespace(state=state),
    }

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, object]:
        return {}

    async def send(message) -> None:  # type: ignore[no-untyped-def]
        return None

    wrapped = observe(app)  # type: ignore[arg-type]
    timings = []
    for target in (app, wrapped):
        for _ in range(1000):
            await target(scope, receive, send)  # type: ignore[arg-type]
        started = time.perf_counter()
        for _ in range(n):
            await target(scope, receive, send)  # type: ignore[arg-type]
        timings.append((time.perf_counter() - started) / n)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--http", action="store_true", help="also compare /token with and without the check")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    prefix = f"issuer-bench:{os.getpid()}:{secrets.token_hex(3)}:"
    print(f"cpus: {os.cpu_count()}, redis: {support.REDIS_URL}")
    try:
        asyncio.run(checks(args, prefix))
        bare, wrapped = asyncio.run(middleware_overhead(args.checks * 5))
        print(f"observing middleware: adds {us(wrapped - bare)} a request (no-op app {us(bare)})")
        if args.http:
            http_comparison(args, prefix)
    finally:
        admin = redis.Redis.from_url(support.REDIS_URL)
        keys = list(admin.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            admin.delete(*keys[start : start + 1000])
        admin.close()


if __name__ == "__main__":
    main()
