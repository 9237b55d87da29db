"""Health endpoints for load balancers and orchestrators.

* ``GET /healthz``: liveness. 200 whenever the process answers HTTP; it checks nothing else, so
  an orchestrator restarts the process only when it is truly stuck, never because the database
  is down (a restart would not fix that).
* ``GET /readyz``: readiness. 200 when this instance can issue tokens now: the database answers,
  Redis answers (when ``ISSUER_REDIS_URL`` is set), and the key ring is loaded with an active
  signing key. Otherwise 503 with ``Retry-After`` and the failing parts named::

      {"status": "unavailable", "failing": ["redis"],
       "checks": {"database": "ok", "redis": "unreachable (ConnectionError)", "keys": "ok"}}

Each probe is bounded by :data:`PROBE_TIMEOUT`; the body names exception classes only, never a
URL, host or credential. Both answers carry ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get

from issuer.errors import TemporarilyUnavailable
from issuer.http.responses import json_response
from issuer.runtime import Runtime

__all__ = ["PROBE_TIMEOUT", "healthz", "readiness", "readyz"]

PROBE_TIMEOUT = 2.0  # seconds per dependency


async def _probe(check: Any) -> str:
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT)
    except TimeoutError:
        return "unreachable (timeout)"
    except TemporarilyUnavailable as error:
        return f"unreachable ({error.detail or 'unavailable'})"
    except Exception as error:
        return f"unreachable ({type(error).__name__})"
    return "ok"


async def readiness(runtime: Runtime) -> dict[str, str]:
    """Each dependency's state: ``"ok"``, ``"not configured"`` or a short reason."""
    checks: dict[str, str] = {}
    database, redis = await asyncio.gather(
        _probe(runtime.db.ping),
        _probe(runtime.denylist.redis.ping) if runtime.denylist.redis is not None else _absent(),
    )
    checks["database"] = database
    checks["redis"] = redis
    try:
        runtime.keyring.signer  # noqa: B018  (raises when no active key is loaded)
        checks["keys"] = "ok" if runtime.keyring.kids else "no published keys"
    except TemporarilyUnavailable:
        checks["keys"] = "no active signing key loaded"
    return checks


async def _absent() -> str:
    return "not configured"


@get("/healthz", include_in_schema=False)
async def healthz() -> Response[bytes]:
    return json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    runtime: Runtime = request.app.state.runtime
    checks = await readiness(runtime)
    failing = [name for name, state in checks.items() if state not in ("ok", "not configured")]
    if failing:
        return json_response(
            {"status": "unavailable", "failing": failing, "checks": checks},
            status=503,
            headers={"Cache-Control": "no-store", "Retry-After": str(runtime.settings.retry_after)},
        )
    return json_response({"status": "ready", "checks": checks}, headers={"Cache-Control": "no-store"})
