"""The BFF's health endpoints, like the issuer's (:mod:`issuer.http.health`):

* ``GET /bff/healthz`` (and ``/healthz`` when the BFF is its own app): liveness, 200 whenever the
  process answers.
* ``GET /bff/readyz`` (and ``/readyz``): 200 when the session database answers, Redis answers
  (when ``BFF_REDIS_URL`` is set) and the issuer's metadata has been read; otherwise 503 with
  ``Retry-After`` and the failing parts named (exception class names only, never a URL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response, get

from issuer.bff.runtime import BffRuntime

__all__ = ["health_handlers"]

PROBE_TIMEOUT = 2.0
NO_STORE = {"cache-control": "no-store"}


async def _probe(check: Callable[[], Awaitable[Any]]) -> str:
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT)
    except TimeoutError:
        return "unreachable (timeout)"
    except Exception as error:
        return f"unreachable ({type(error).__name__})"
    return "ok"


async def readiness(bff: BffRuntime) -> dict[str, str]:
    async def database() -> None:
        await bff.database.ping()

    async def redis() -> None:
        assert bff.redis is not None
        await bff.redis.ping()

    async def issuer() -> None:
        await bff.issuer.endpoints()

    async def absent() -> str:
        return "not configured"

    checks = await asyncio.gather(
        _probe(database), _probe(redis) if bff.redis is not None else absent(), _probe(issuer)
    )
    return dict(zip(("database", "redis", "issuer"), checks, strict=True))


def health_handlers(root: bool) -> list[Any]:
    """The two handlers at ``/bff/...``, and at the root too when ``root``."""
    live_paths = ["/bff/healthz", "/healthz"] if root else ["/bff/healthz"]
    ready_paths = ["/bff/readyz", "/readyz"] if root else ["/bff/readyz"]

    @get(live_paths, include_in_schema=False, name="bff-healthz")
    async def healthz() -> Response[Any]:
        return Response({"status": "ok"}, headers=NO_STORE)

    @get(ready_paths, include_in_schema=False, name="bff-readyz")
    async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
        bff: BffRuntime = request.app.state.bff
        checks = await readiness(bff)
        failing = [name for name, state in checks.items() if state not in ("ok", "not configured")]
        if failing:
            return Response(
                {"status": "unavailable", "failing": failing, "checks": checks},
                status_code=503,
                headers={**NO_STORE, "retry-after": "5"},
            )
        return Response({"status": "ok", "checks": checks}, headers=NO_STORE)

    return [healthz, readyz]
