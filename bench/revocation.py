"""What the denylist costs and how fast a revocation travels, on two real instances.

Starts two ``issuer serve`` processes on one fresh PostgreSQL database and the local Redis (a
key prefix of its own), then prints:

* ``/introspect`` requests per second on one instance (``--concurrency`` clients for
  ``--seconds``), each request a signature check plus one Redis ``MGET``;
* revoke-to-reject latency over ``--revocations`` tokens: from sending ``POST /revoke`` to
  instance one until instance two's ``/introspect`` says ``active: false`` (median, p99, max),
  and until a resource server's verifier refuses the token: what a resource server runs,
  :class:`issuer_verify.Verifier` with :class:`issuer_verify.RedisDenylist` (its local copy fed by
  the Redis channel), polled every 0.5 ms.

    .venv/bin/python bench/revocation.py [--seconds 5] [--concurrency 8] [--revocations 100]

Needs PostgreSQL and Redis as the tests do (``ISSUER_TEST_DATABASE_URL``,
``ISSUER_TEST_REDIS_URL``). Cleans up after itself (database dropped, Redis keys deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from issuer.store import migrations
from issuer_verify import InvalidToken, RedisDenylist, Verifier
from tests import support

ISSUER_URL = "https://issuer.bench"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def token(http: httpx.AsyncClient, url: str, app: tuple[str, str]) -> str:
    response = await http.post(url + "/token", auth=app, data={"grant_type": "client_credentials"})
    response.raise_for_status()
    return str(response.json()["access_token"])


async def introspection_rate(
    http: httpx.AsyncClient,
    url: str,
    rs: tuple[str, str],
    tokens: list[str],
    seconds: float,
    concurrency: int,
    expect_active: bool = True,
) -> tuple[float, int]:
    done = 0
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done, errors
        n = i
        while time.perf_counter() < deadline:
            response = await http.post(url + "/introspect", auth=rs, data={"token": tokens[n % len(tokens)]})
            n += 1
            if response.status_code == 200 and response.json()["active"] is expect_active:
                done += 1
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.perf_counter() - started), errors


async def revocation_latency(
    http: httpx.AsyncClient,
    one: str,
    two: str,
    app: tuple[str, str],
    rs: tuple[str, str],
    verifier: Verifier,
    count: int,
) -> tuple[list[float], list[float], list[float]]:
    to_reject: list[float] = []
    to_verifier: list[float] = []
    revoke_call: list[float] = []
    for _ in range(count):
        access = await token(http, one, app)
        verifier.verify(access)
        first = await http.post(two + "/introspect", auth=rs, data={"token": access})
        assert first.json()["active"] is True
        started = time.perf_counter()
        # The verifier is watched from the moment the revocation is sent, alongside the
        # /introspect polling: neither measurement waits for the other.
        watcher = asyncio.ensure_future(refused_after(verifier, access, started))
        response = await http.post(one + "/revoke", auth=app, data={"token": access})
        revoke_call.append(time.perf_counter() - started)
        assert response.status_code == 200
        while True:
            check = await http.post(two + "/introspect", auth=rs, data={"token": access})
            if check.json()["active"] is False:
                to_reject.append(time.perf_counter() - started)
                break
        to_verifier.append(await asyncio.wait_for(watcher, 30))
    return revoke_call, to_reject, to_verifier


async def refused_after(verifier: Verifier, access: str, started: float) -> float:
    """Seconds from ``started`` until ``verifier`` refuses ``access`` as revoked (polled every 0.5 ms)."""
    while not refuses(verifier, access):
        await asyncio.sleep(0.0005)
    return time.perf_counter() - started


def refuses(verifier: Verifier, access: str) -> bool:
    try:
        verifier.verify(access)
    except InvalidToken as error:
        if error.reason != "revoked":
            raise
        return True
    return False


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


async def measure(
    one: str, two: str, app: tuple[str, str], rs: tuple[str, str], prefix: str, args: argparse.Namespace
) -> None:
    limits = httpx.Limits(
        max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2
    )
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        tokens = [await token(http, one, app) for _ in range(50)]
        await introspection_rate(http, one, rs, tokens, 1.0, args.concurrency)  # warm-up
        rate, errors = await introspection_rate(http, one, rs, tokens, args.seconds, args.concurrency)
        base, _ = await introspection_rate(
            http, one, rs, ["not-a-token"], args.seconds, args.concurrency, expect_active=False
        )
        print(
            f"/introspect baseline (garbage token: client auth + HTTP only): {base:,.0f} requests/s "
            f"({args.concurrency} concurrent clients, {args.seconds:.0f} s)"
        )
        print(
            f"/introspect (active tokens, Redis denylist): {rate:,.0f} requests/s "
            f"({args.concurrency} concurrent clients, {args.seconds:.0f} s, {errors} errors)"
        )
        jwks = (await http.get(two + "/.well-known/jwks.json")).json()
        denylist = RedisDenylist(support.REDIS_URL, prefix=prefix)
        with Verifier(issuer=ISSUER_URL, audience=ISSUER_URL, jwks=jwks, denylist=denylist) as verifier:
            if not denylist.wait_ready(30):
                raise RuntimeError("the verifier's denylist copy never loaded")
            revoke_call, to_reject, to_verifier = await revocation_latency(
                http, one, two, app, rs, verifier, args.revocations
            )
    n = len(to_reject)
    print(
        f"POST /revoke on instance one, {n} revocations: median {ms(statistics.median(revoke_call))}, "
        f"p99 {ms(percentile(revoke_call, 0.99))}"
    )
    print(
        f"revoke -> instance two's /introspect says inactive: median {ms(statistics.median(to_reject))}, "
        f"p99 {ms(percentile(to_reject, 0.99))}, max {ms(max(to_reject))}"
    )
    print(
        "revoke -> a resource server's Verifier (RedisDenylist, Redis channel) refuses it: "
        f"median {ms(statistics.median(to_verifier))}, p99 {ms(percentile(to_verifier, 0.99))}, "
        f"max {ms(max(to_verifier))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--revocations", type=int, default=100)
    args = parser.parse_args()

    name = f"issuer_bench_{secrets.token_hex(4)}"
    url = support.pg_create(name)
    prefix = f"issuer-bench:{secrets.token_hex(4)}:"
    try:
        migrations.upgrade(url)
        with tempfile.TemporaryDirectory() as tmp:
            env = support.issuer_env(
                url,
                Path(tmp) / "keys",
                ISSUER_REDIS_URL=support.REDIS_URL,
                ISSUER_REDIS_PREFIX=prefix,
                ISSUER_URL=ISSUER_URL,
                ISSUER_KEY_ENCRYPTION_KEY=support.test_key(),
                ISSUER_HMAC_KEY=support.test_key(),
            )

            def client(*extra: str) -> tuple[str, str]:
                out = support.run_cli(env, "clients", "create", "--json", "--name", "bench", *extra)
                body = json.loads(out.stdout)
                return body["client_id"], body["client_secret"]

            app = client("--grant", "client_credentials", "--scope", "read")
            rs = client("--grant", "client_credentials", "--can-introspect")
            with (
                support.running_server(env, Path(tmp) / "one.log") as one,
                support.running_server(env, Path(tmp) / "two.log") as two,
            ):
                asyncio.run(measure(one.url, two.url, app, rs, prefix, args))
    finally:
        support.pg_drop(name)
        client = redis.Redis.from_url(support.REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main()
