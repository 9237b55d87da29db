"""Mint N fresh refresh tokens for the load harness (``load.sh --rt-cmd``), one per line on stdout.

Each token starts its own refresh family exactly as a ``password`` login does, through the
issuer's own model layer (:class:`issuer.runtime.Runtime`: ``RefreshStore.start_family`` with
``RefreshTokens``), against ``ISSUER_DATABASE_URL`` with the same key material as the server
(``ISSUER_KEYS_DIR`` / ``ISSUER_HMAC_KEY``). It is a benchmark tool run by an operator with
database access; the HTTP app has no mint route.

    .venv/bin/python bench/mint_refresh.py --client-id cli_... --count 10000 [--scope "read write"]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time

from issuer.grants.password import FAMILY_ID_PREFIX
from issuer.runtime import Runtime
from issuer.settings import load

BATCH = 500  # families per transaction


async def mint(client_id: str, count: int, scope: str | None, subject_prefix: str) -> list[str]:
    runtime = Runtime(load())
    try:
        await runtime.check_schema(upgrade_embedded=False)
        client = await runtime.clients.get(client_id)
        if client is None:
            raise SystemExit(f"mint_refresh: error: no client {client_id!r}")
        if "refresh_token" not in client.grant_types:
            raise SystemExit(f"mint_refresh: error: client {client_id!r} lacks the refresh_token grant")
        granted = scope if scope is not None else " ".join(sorted(client.scopes))
        settings = runtime.settings
        tokens = runtime.grants.refresh_tokens
        out: list[str] = []
        now = int(time.time())
        while len(out) < count:
            async with runtime.db.transaction() as conn:
                for _ in range(min(BATCH, count - len(out))):
                    token = tokens.new()
                    await runtime.refresh_store.start_family(
                        conn,
                        family_id=FAMILY_ID_PREFIX + secrets.token_urlsafe(16),
                        client_id=client_id,
                        subject=f"{subject_prefix}{len(out)}",
                        scope=granted,
                        digest=tokens.digest(token),
                        now=now,
                        idle_ttl=settings.refresh_idle_ttl,
                        absolute_ttl=settings.refresh_absolute_ttl,
                    )
                    out.append(token)
        return out
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--scope", default=None, help="granted scope (default: all the client's scopes)")
    parser.add_argument("--subject-prefix", default="bench-user-")
    args = parser.parse_args()
    if not 0 < args.count <= 1_000_000:
        parser.error("--count must be between 1 and 1000000")
    tokens = asyncio.run(mint(args.client_id, args.count, args.scope, args.subject_prefix))
    sys.stdout.write("\n".join(tokens) + "\n")


if __name__ == "__main__":
    main()
