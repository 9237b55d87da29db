"""What one refresh rotation costs in the store (``RefreshStore.rotate``), without HTTP.

Creates a fresh PostgreSQL database (and a SQLite file), starts ``--families`` logins of real
users at a real client, then rotates each once with ``--concurrency`` tasks and prints
rotations per second and the mean wall time per rotation, best of ``--runs``. Used to price a
change to the rotation statement (e.g. the disabled-user and disabled-client checks).

    .venv/bin/python bench/rotation_store.py [--families 3000] [--concurrency 8] [--runs 3] [--backend both]

Needs PostgreSQL as the tests do (``ISSUER_TEST_DATABASE_URL``). Drops its database afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from issuer.keys.material import KeyMaterial
from issuer.runtime import Runtime
from issuer.settings import load
from issuer.store import migrations
from issuer.store.refresh import Outcome, Presentation
from tests import support


async def run_once(url: str, tmp: Path, families: int, concurrency: int) -> float:
    env = {
        "ISSUER_DATABASE_URL": url,
        "ISSUER_KEYS_DIR": str(tmp / "keys"),
        "ISSUER_DB_POOL_SIZE": str(max(concurrency, 2)),
    }
    material = KeyMaterial(kek=secrets.token_bytes(32), hmac_key=secrets.token_bytes(32))
    runtime = Runtime(load(env), material=material)
    await runtime.check_schema(upgrade_embedded=False)
    try:
        client = await runtime.clients.create(name="bench", grant_types=["password"], scopes=["read"])
        tokens = runtime.grants.refresh_tokens
        now = int(time.time())
        presented = []
        async with runtime.db.transaction() as conn:
            for i in range(families):
                subject = f"usr_bench_{i}"
                await runtime.users.store.create(
                    conn, id=subject, username=subject, password_hash="x", created_at=now, updated_at=now
                )
                token = tokens.new()
                await runtime.refresh_store.start_family(
                    conn,
                    family_id=f"sid_bench_{i}_{secrets.token_hex(4)}",
                    client_id=client.client_id,
                    subject=subject,
                    scope="read",
                    digest=tokens.digest(token),
                    now=now,
                    idle_ttl=3600,
                    absolute_ttl=7200,
                )
                presented.append(token)
        queue = list(presented)

        async def worker() -> None:
            while queue:
                token = queue.pop()
                p = Presentation(
                    digest=tokens.digest(token),
                    successor_digest=tokens.digest(tokens.successor_of(token)),
                    client_id=client.client_id,
                    address="192.0.2.1",
                    now=now + 1,
                    idle_ttl=3600,
                    grace=10,
                )
                result = await runtime.refresh_store.rotate(runtime.db, p, lambda scope: scope)
                assert result.outcome is Outcome.ROTATED, result

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for backend in ("postgresql", "sqlite") if args.backend == "both" else (args.backend,):
            best = float("inf")
            for run in range(args.runs):
                if backend == "postgresql":
                    name = f"issuer_bench_{os.getpid()}_{run}"
                    url = support.pg_create(name)
                else:
                    name, url = "", f"sqlite:///{tmp / f'bench{run}.db'}"
                try:
                    migrations.upgrade(url)
                    best = min(best, asyncio.run(run_once(url, tmp, args.families, args.concurrency)))
                finally:
                    if name:
                        support.pg_drop(name)
            print(
                f"{backend}: {args.families / best:.0f} rotations/s, {best / args.families * 1e6:.0f} us "
                f"per rotation (best of {args.runs}, concurrency {args.concurrency})"
            )


if __name__ == "__main__":
    main()
