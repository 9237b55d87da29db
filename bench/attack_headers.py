"""The request-header attacks of issue 14 point 1, against one ``issuer serve``, with figures.

Three scenarios, one after another, each on loopback and bounded in size and time:

* ``128MiB``: one request whose one header value is 128 MiB (then the end of the head);
* ``4x64MiB``: four connections at once, each sending a 64 MiB header value that never ends,
  then holding the connection open for ``--hold`` seconds;
* ``350slow``: 350 connections, each sending the start of a head and then one byte every
  ``--trickle`` seconds, for ``--slow-seconds`` at most.

For each: the server's CPU seconds (utime + stime of the process), its RSS before and at the
highest sampled point, how much of the attack the server took (bytes, or connections still held),
and the latency of ``GET /healthz`` (a new connection each, every 50 ms) during the attack: p50 and
max, next to p50 on the idle server before.

    .venv/bin/python bench/attack_headers.py [--only 128MiB,4x64MiB,350slow] [--base /tmp/base-h1]

``--base DIR`` runs the server from another checkout of the package (put first on its
PYTHONPATH), e.g. the commit before the limits: ``git worktree add /tmp/base-h1 e9daf0a``.
The server runs on SQLite in a temporary directory with the default settings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from issuer.keys.material import b64encode
from issuer.store import migrations
from tests import support

MiB = 1 << 20
HEAD = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Flood: "


@dataclass
class Watch:
    """Samples the server's RSS and probes ``/healthz`` while an attack runs."""

    server: support.ServerProcess
    pid: int
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    rss_max: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _probe(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                ok = httpx.get(self.server.url + "/healthz", timeout=60).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                self.latencies.append(time.perf_counter() - started)
            else:
                self.failures += 1
            self._stop.wait(0.05)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss_max = max(self.rss_max, support.rss_bytes(self.pid))
            self._stop.wait(0.02)

    @contextmanager
    def running(self) -> Iterator[Watch]:
        threads = [threading.Thread(target=self._probe), threading.Thread(target=self._sample)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()


def send_head(port: int, size: int, *, finish: bool) -> tuple[socket.socket, int]:
    """Send a head with one ``size``-byte header value; how much of it went out (into the server or
    the kernel's socket buffers) before the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=600)
    block = b"a" * (256 * 1024)
    sent = 0
    try:
        sock.sendall(HEAD)
        while sent < size:
            sent += sock.send(block[: size - sent])
        if finish:
            sock.sendall(b"\r\n\r\n")
    except OSError:
        pass
    return sock, sent


def closed(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def attack_128(server: support.ServerProcess, args: argparse.Namespace) -> str:
    sock, sent = send_head(server.port, 128 * MiB, finish=True)
    answer = b""
    with contextlib.suppress(OSError):
        sock.settimeout(120)
        answer = sock.recv(64)
    sock.close()
    first = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "connection closed"
    return f"client sent {sent / MiB:.2f} of 128 MiB before the server closed; answer: {first}"


def attack_4x64(server: support.ServerProcess, args: argparse.Namespace) -> str:
    results: list[tuple[socket.socket, int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(send_head(server.port, 64 * MiB, finish=False)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline and not all(closed(sock) for sock, _ in results):
        time.sleep(0.2)
    held = sum(not closed(sock) for sock, _ in results)
    for sock, _ in results:
        sock.close()
    taken = ", ".join(f"{sent / MiB:.2f}" for _, sent in results)
    return f"clients sent {taken} of 64 MiB each; {held} of 4 still open after {args.hold:.0f} s"


def attack_slow(server: support.ServerProcess, args: argparse.Namespace) -> str:
    socks = []
    for _ in range(args.slow):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
        socks.append(sock)
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    while len(closed_at) < len(socks) and time.monotonic() - opened < args.slow_seconds:
        for i, sock in enumerate(socks):
            if i in closed_at:
                continue
            if closed(sock):
                closed_at[i] = time.monotonic() - opened
                continue
            with contextlib.suppress(OSError):
                sock.send(b"a")
        time.sleep(args.trickle)
    for sock in socks:
        sock.close()
    held = len(socks) - len(closed_at)
    cut = sorted(closed_at.values())
    when = f" after {cut[len(cut) // 2]:.1f} s (p50), {cut[-1]:.1f} s (max)" if cut else ""
    return f"server closed {len(cut)} of {len(socks)}{when}; {held} open after {args.slow_seconds:.0f} s"


SCENARIOS: dict[str, Callable[[support.ServerProcess, argparse.Namespace], str]] = {
    "128MiB": attack_128,
    "4x64MiB": attack_4x64,
    "350slow": attack_slow,
}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--base", help="run the server from this checkout (first on its PYTHONPATH)")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds 4x64MiB holds its connections")
    parser.add_argument("--slow", type=int, default=350, help="slow connections")
    parser.add_argument("--slow-seconds", type=float, default=40.0, help="how long the slow clients go on")
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between a slow client's bytes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="attack-headers-") as tmp_name:
        tmp = Path(tmp_name)
        db = f"sqlite:///{tmp / 'issuer.db'}"
        migrations.upgrade(db)
        env = support.issuer_env(
            db,
            tmp / "keys",
            ISSUER_KEY_ENCRYPTION_KEY=b64encode(secrets.token_bytes(32)),
            ISSUER_HMAC_KEY=b64encode(secrets.token_bytes(32)),
        )
        if args.base:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.base, env.get("PYTHONPATH")]))
        with support.running_server(env, tmp / "server.log") as server:
            assert server.proc is not None
            pid = server.proc.pid
            idle = []
            for _ in range(40):
                started = time.perf_counter()
                httpx.get(server.url + "/healthz", timeout=10)
                idle.append(time.perf_counter() - started)
            source = args.base or str(Path(__file__).resolve().parent.parent)
            print(f"issuer serve from {source}; /healthz idle p50 {ms(statistics.median(idle))}")
            print(
                "| scenario | server CPU s | server RSS MiB before / max | /healthz p50 / max "
                "| probes failed | what happened |"
            )
            print("|---|---|---|---|---|---|")
            for name in args.only.split(","):
                rss_before = support.rss_bytes(pid)
                cpu_before = support.cpu_seconds(pid)
                watch = Watch(server, pid)
                with watch.running():
                    outcome = SCENARIOS[name](server, args)
                cpu = support.cpu_seconds(pid) - cpu_before
                lat = watch.latencies or [float("nan")]
                print(
                    f"| {name} | {cpu:.2f} | {rss_before / MiB:.0f} / {watch.rss_max / MiB:.0f} | "
                    f"{ms(statistics.median(lat))} / {ms(max(lat))} | {watch.failures} | {outcome} |",
                    flush=True,
                )
                time.sleep(1)


if __name__ == "__main__":
    main()
