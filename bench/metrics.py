"""Micro-benchmark: what the observing middleware (issuer.http.observe) adds to a request.

Runs a no-op ASGI app bare and wrapped in the middleware, in-process (no server, no sockets), once
with the metrics of one process and once in prometheus_client's multiprocess mode (a child
interpreter with ``PROMETHEUS_MULTIPROC_DIR`` set, as every worker of ``issuer serve --workers
N`` runs), and prints the difference per request and the cost of one scrape's rendering.
``--runtime`` gives the middleware a real :class:`~issuer.runtime.Runtime` (SQLite, nothing
started), so that the sync of the components' tallies is part of the figure.

    .venv/bin/python bench/metrics.py [--requests 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} us"


async def overhead(requests: int, repeat: int, runtime: bool) -> tuple[float, float, float]:
    """Median seconds per call: bare app, app wrapped in the middleware, one render of /metrics."""
    import logging

    from issuer.http.observe import observe
    from issuer.observability.metrics import Metrics

    logging.getLogger("issuer.access").setLevel(logging.WARNING)  # as a benchmarked server runs
    if runtime:
        from issuer.runtime import Runtime
        from issuer.settings import load

        work = tempfile.mkdtemp(prefix="issuer-bench-")
        os.environ.setdefault("ISSUER_DATABASE_URL", f"sqlite:///{work}/bench.db")
        os.environ.setdefault("ISSUER_KEYS_DIR", f"{work}/keys")
        owner: Any = Runtime(load())
    else:
        owner = SimpleNamespace(metrics=Metrics())
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/token",
        "headers": [(b"host", b"x"), (b"content-type", b"application/x-www-form-urlencoded")],
        "app": SimpleNamespace(state=SimpleNamespace(runtime=owner)),
    }

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, object]:
        return {}

    async def send(message: Any) -> None:
        return None

    wrapped = observe(app)
    figures: list[list[float]] = [[], []]
    for _ in range(repeat):
        for index, target in enumerate((app, wrapped)):
            for _ in range(1000):
                await target(scope, receive, send)
            started = time.perf_counter()
            for _ in range(requests):
                await target(scope, receive, send)
            figures[index].append((time.perf_counter() - started) / requests)
    started = time.perf_counter()
    renders = 200
    for _ in range(renders):
        await owner.metrics.render()
    render = (time.perf_counter() - started) / renders
    return statistics.median(figures[0]), statistics.median(figures[1]), render


def report(label: str, bare: float, wrapped: float, render: float) -> None:
    added = us(wrapped - bare)
    print(f"{label:20s} middleware adds {added} a request (no-op app {us(bare)}); render {us(render)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runtime", action="store_true", help="a real Runtime behind the middleware")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bare, wrapped, render = asyncio.run(overhead(args.requests, args.repeat, args.runtime))
        print(f"{bare} {wrapped} {render}")
        return
    print(f"cpus: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, multiprocess in (("one process:", False), ("multiprocess mode:", True)):
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with tempfile.TemporaryDirectory(prefix="issuer-bench-metrics-") as directory:
            if multiprocess:
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            command = [sys.executable, __file__, "--child", "--requests", str(args.requests)]
            command += ["--repeat", str(args.repeat)] + (["--runtime"] if args.runtime else [])
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        bare, wrapped, render = (float(x) for x in out.split())
        report(label, bare, wrapped, render)


if __name__ == "__main__":
    main()
