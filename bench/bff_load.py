"""What the BFF adds to an API call: a proxied request (session lookup, token attach, proxy)
against the same upstream called directly with the bearer token.

Starts ``issuer serve`` (SQLite), the test upstream of ``tests/bff`` (it verifies the token with
``issuer_verify`` and echoes ``sub``) and ``issuer bff serve`` (SQLite sessions, or Redis in front
with ``--redis``), signs a user in through the issuer's login page, then sends ``--requests``
sequential GETs on one kept-alive connection each way, alternating in rounds so that both see the
same machine load, and prints p50/p99 of each and of the difference.

    .venv/bin/python bench/bff_load.py [--requests 2000] [--redis]

Target (issue 11): the BFF adds under 1 ms at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from issuer.bff.sessions import Sealer, digest
from issuer.bff.store import DatabaseSessions
from issuer.keys.material import b64decode, b64encode
from issuer.store.database import Database
from tests import support
from tests.bff.support import BffProcess, SpaBrowser, Upstream
from tests.bff.support import issuer_env as bff_issuer_env


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(client: httpx.Client, url: str, headers: dict[str, str], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return out


async def access_token(db: Path, key: str, cookie: str) -> str:
    store = DatabaseSessions(Database(f"sqlite:///{db}"), Sealer(b64decode(key)))
    try:
        session = await store.get(digest(cookie))
    finally:
        await store.close()
    assert session is not None
    return session.tokens.access_token


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis", action="store_true", help="sessions cached in Redis (BFF_REDIS_URL)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        env = bff_issuer_env(directory, ISSUER_ACCESS_TOKEN_TTL="3600")
        port = support.free_port()
        bff_url = f"http://127.0.0.1:{port}"
        with support.running_server(env, directory / "issuer.log") as issuer:
            env["ISSUER_URL"] = issuer.url
            client_id, secret = support.register_client(
                env, "--redirect-uri", bff_url + "/bff/callback", "--first-party", name="bff",
                grants=("authorization_code", "refresh_token"), scope="openid read",
            )  # fmt: skip
            support.add_user(env)
            upstream = Upstream(issuer.url, directory / "upstream.log").start()
            key = b64encode(secrets.token_bytes(32))
            prefix = f"bff-bench:{secrets.token_hex(4)}:"
            bff_env = {k: v for k, v in env.items() if not k.startswith("ISSUER_")}
            bff_env.update(
                BFF_URL=bff_url, BFF_ISSUER_URL=issuer.url, BFF_CLIENT_ID=client_id,
                BFF_CLIENT_SECRET=secret, BFF_SCOPE="openid read", BFF_UPSTREAMS=f"/api={upstream.url}",
                BFF_DATABASE_URL=f"sqlite:///{directory / 'bff.db'}", BFF_SESSION_KEY=key,
            )  # fmt: skip
            if args.redis:
                bff_env.update(BFF_REDIS_URL=support.REDIS_URL, BFF_REDIS_PREFIX=prefix)
            bff = BffProcess(bff_env, port, directory / "bff.log").start()
            try:
                browser = SpaBrowser()
                browser.sign_in(bff_url)
                cookie = browser.cookies["__Host-bff-session"]
                token = asyncio.run(access_token(directory / "bff.db", key, cookie))
                via: list[float] = []
                direct: list[float] = []
                with (
                    httpx.Client(timeout=30, trust_env=False) as a,
                    httpx.Client(timeout=30, trust_env=False) as b,
                ):
                    bff_headers = {"x-csrf": "1", "cookie": f"__Host-bff-session={cookie}"}
                    upstream_headers = {"authorization": f"Bearer {token}"}
                    timed(a, bff_url + "/api/bench", bff_headers, 50)  # warm both paths
                    timed(b, upstream.url + "/bench", upstream_headers, 50)
                    rounds = max(1, args.requests // 100)
                    for _ in range(rounds):
                        via += timed(a, bff_url + "/api/bench", bff_headers, 100)
                        direct += timed(b, upstream.url + "/bench", upstream_headers, 100)
                browser.http.close()
            finally:
                bff.stop()
                upstream.stop()
                if args.redis:
                    import redis

                    client = redis.Redis.from_url(support.REDIS_URL)
                    keys = list(client.scan_iter(match=prefix + "*"))
                    if keys:
                        client.delete(*keys)
                    client.close()
    store = "SQLite + Redis" if args.redis else "SQLite"
    print(f"BFF sessions on {store}; {len(via)} sequential requests each way, one connection each")
    print(f"{'path':<28}{'p50 ms':>10}{'p99 ms':>10}")
    print(
        f"{'upstream directly (bearer)':<28}{percentile(direct, 0.5):>10.3f}{percentile(direct, 0.99):>10.3f}"
    )
    print(f"{'through the BFF':<28}{percentile(via, 0.5):>10.3f}{percentile(via, 0.99):>10.3f}")
    print(f"{'added by the BFF':<28}{percentile(via, 0.5) - percentile(direct, 0.5):>10.3f}")


if __name__ == "__main__":
    main()
