"""Instructions per request (user space, counted by valgrind's callgrind) of the issuer's
``client_credentials`` and JWKS answers next to the floor programs' (``bench/floor_app.py``).

    .venv/bin/python bench/instructions.py [--requests 1000] [--warmup 300] [--only jwks,cc]
        [--servers issuer,floor]

Wall-clock and CPU-second figures on a shared virtual machine drift by tens of percent between
runs (steal time, other guests); an instruction count does not: the same program, input and
environment give the same count whatever else the machine does. Each server runs under
``valgrind --tool=callgrind`` on a fresh SQLite file (issuer: ``issuer serve``; floor:
``bench/floor_app.py``); a client on one keep-alive connection sends ``--warmup`` requests, the
counters are zeroed (``callgrind_control -z``), ``--requests`` more are sent one after the other
and the counters dumped (``callgrind_control -d``); then the counters are zeroed again and dumped
after as long a time without requests, and that idle count (the issuer's background tasks run on
timers) is subtracted. Printed: instructions per request and the
issuer / floor ratio of the floor's count to the issuer's (the ratio of requests per instruction,
as the load bench's "issuer / floor" is of requests per CPU-second).

What it leaves out: the kernel's share (socket reads and writes, the same system calls for both)
and whatever costs time but not instructions (cache misses, stalls); sequential requests on one
connection also miss the batching of a loaded server. It prices the code, not the machine:
``bench/token_load.sh`` remains the measurement of the targets. Needs valgrind (on every machine
of this kind) and takes about a minute per server.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
FORM = b"application/x-www-form-urlencoded"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(method: str, path: str, auth: str | None = None, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if auth:
        head += f"Content-Type: {FORM.decode()}\r\nAuthorization: Basic {auth}\r\n"
    if method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def _send(conn: socket.socket, request: bytes, count: int) -> None:
    """``count`` requests, each answer read whole (Content-Length or chunked) before the next."""
    pending = b""
    for _ in range(count):
        conn.sendall(request)
        while True:
            head, sep, body = pending.partition(b"\r\n\r\n")
            if sep:
                status = head.split(b" ", 2)[1]
                if status != b"200":
                    raise SystemExit(f"answer {status.decode()}: {head.decode(errors='replace')}")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    pending = body[int(length.group(1)) :]
                    break
                if not length and b"0\r\n\r\n" in body:
                    pending = body.split(b"0\r\n\r\n", 1)[1]
                    break
            chunk = conn.recv(65536)
            if not chunk:
                raise SystemExit("the server closed the connection")
            pending += chunk


def _measure(
    label: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    request: bytes,
    args: argparse.Namespace,
    work: Path,
) -> int:
    out = work / f"{label}.callgrind"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"{label}.log", "wb"),
    )
    try:
        deadline = time.monotonic() + 300  # an interpreter start under valgrind takes a while
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"{label} did not start: {(work / f'{label}.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.5)

        def control(flag: str) -> None:  # -z zeroes the counters, -d dumps them
            subprocess.run(["callgrind_control", flag, str(proc.pid)], check=True, capture_output=True)

        with conn:
            _send(conn, request, args.warmup)
            control("-z")
            started = time.monotonic()
            _send(conn, request, args.requests)
            busy = time.monotonic() - started
            control("-d")
            # The same time without requests: what the server's background work (timers, the
            # issuer's periodic reloads) costs while the requests ran, subtracted from their count.
            control("-z")
            time.sleep(busy)
            control("-d")
    finally:
        proc.terminate()
        proc.wait(60)
    dumps = sorted(work.glob(f"{label}.callgrind.*"), key=lambda p: int(p.suffix[1:]))

    def total(dump: Path) -> int:
        return int(
            next(line for line in dump.read_text().splitlines() if line.startswith("totals:")).split()[1]
        )

    return total(dumps[-2]) - total(dumps[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--only", default="jwks,cc", help="jwks, cc or both (comma-separated)")
    parser.add_argument(
        "--servers",
        default="issuer,floor",
        help="issuer, floor or both (comma-separated); the ratio needs both",
    )
    args = parser.parse_args()
    wanted = [s for s in args.servers.split(",") if s]
    if not wanted or set(wanted) - {"issuer", "floor"}:
        parser.error(f"--servers: issuer, floor or both, not {args.servers!r}")
    scenarios = [s for s in args.only.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="issuer-instr.") as tmp:
        work = Path(tmp)
        port = _free_port()
        env = {
            **os.environ,
            "ISSUER_DATABASE_URL": f"sqlite:///{work / 'issuer.db'}",
            "ISSUER_KEYS_DIR": str(work / "keys"),
            "ISSUER_URL": f"http://127.0.0.1:{port}",
        }
        for name in ("ISSUER_REDIS_URL", "ISSUER_KEY_ENCRYPTION_KEY", "ISSUER_HMAC_KEY"):
            env.pop(name, None)
        issuer = str(VENV / "issuer")
        subprocess.run([issuer, "db", "upgrade"], env=env, check=True, capture_output=True)
        created = json.loads(
            subprocess.run(
                [
                    issuer,
                    "clients",
                    "create",
                    "--name",
                    "bench",
                    "--grant",
                    "client_credentials",
                    "--scope",
                    "read write",
                    "--json",
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        auth = base64.b64encode(f"{created['client_id']}:{created['client_secret']}".encode()).decode()
        cc = b"grant_type=client_credentials"
        servers = {
            "issuer": (
                [issuer, "serve", "--port", str(port), "--log-level", "warning"],
                {
                    "jwks": _request("GET", "/.well-known/jwks.json"),
                    "cc": _request("POST", "/token", auth, cc),
                },
            ),
            "floor": (
                [str(VENV / "python"), str(ROOT / "bench" / "floor_app.py"), "--port", str(port)],
                {"jwks": _request("GET", "/jwks"), "cc": _request("POST", "/token", auth, cc)},
            ),
        }
        counts: dict[tuple[str, str], float] = {}
        for scenario in scenarios:
            for server in wanted:
                argv, requests = servers[server]
                total = _measure(f"{server}-{scenario}", argv, env, port, requests[scenario], args, work)
                counts[(server, scenario)] = total / args.requests
                print(
                    f"{server} {scenario}: {total / args.requests:,.0f} instructions per request",
                    file=sys.stderr,
                )
        if len(wanted) < 2:
            return
        print(f"\n{args.requests} sequential requests after {args.warmup} (callgrind, user space)\n")
        print("| scenario | issuer instructions / request | floor instructions / request | issuer / floor |")
        print("|---|---|---|---|")
        for scenario in scenarios:
            issuer_n, floor_n = counts[("issuer", scenario)], counts[("floor", scenario)]
            print(f"| {scenario} | {issuer_n:,.0f} | {floor_n:,.0f} | {floor_n / issuer_n:.2f} |")


if __name__ == "__main__":
    main()
