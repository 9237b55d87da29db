"""Issue 14, point 1: unbounded request headers (unauthenticated denial of service).

Against a real ``issuer serve``, over raw sockets: a head over ISSUER_MAX_HEADER_BYTES or with more
than ISSUER_MAX_HEADER_FIELDS fields is refused with 431 before the server has parsed much of it
(its CPU time stays small), a client that sends its head or its body too slowly is disconnected
after ISSUER_HEADER_TIMEOUT / ISSUER_BODY_TIMEOUT, connections beyond ISSUER_MAX_CONNECTIONS are
refused with 503, and ``/healthz`` keeps answering while all of that goes on.

The deadlines below only keep a broken build from hanging the suite; nothing asserts a latency.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from issuer.store import migrations
from tests import support

HEADER_TIMEOUT = 2  # the servers' ISSUER_HEADER_TIMEOUT / ISSUER_BODY_TIMEOUT here (default 10 / 30)
BODY_TIMEOUT = 2
HANG_GUARD = 60.0  # the most a test waits for the server to do what it must


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.ServerProcess]:
    """One server for the module, default size limits, short timeouts."""
    tmp = tmp_path_factory.mktemp("request-limits")
    db = f"sqlite:///{tmp / 'issuer.db'}"
    migrations.upgrade(db)
    env = support.issuer_env(
        db,
        tmp / "keys",
        ISSUER_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        ISSUER_BODY_TIMEOUT=str(BODY_TIMEOUT),
    )
    with support.running_server(env, tmp / "server.log") as proc:
        yield proc


def pid(server: support.ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def connect(server: support.ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (or reset) the connection; what it sent before is dropped."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


def flood_head(server: support.ServerProcess, total: int, *, finish: bool = False) -> int:
    """Send a request whose one header value is ``total`` bytes long, as fast as the server takes
    it; return how many bytes went out before the server closed the connection (``total`` if it
    never did). Unfinished (``finish=False``): the head never ends."""
    sock = connect(server)
    sent = 0
    block = b"a" * 65536
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        while sent < total:
            sent += sock.send(block[: total - sent])
        if finish:
            sock.sendall(b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return sent
    finally:
        sock.close()
    return sent


def healthz(server: support.ServerProcess) -> int:
    return support.get(server.url + "/healthz", timeout=HANG_GUARD).status_code


# ---------------------------------------------------------------- head size and field count


def test_unbounded_request_headers_a_head_over_the_limit_gets_431(live: support.ServerProcess) -> None:
    sock = connect(live)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    answer = read_all(sock)
    sock.close()
    assert status(answer) == 431, answer[:200]
    assert b"connection: close" in answer.lower()
    assert healthz(live) == 200  # the server is fine, and a head within the limit still passes


def test_unbounded_request_headers_a_head_just_under_the_limit_is_served(live: support.ServerProcess) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    pad = 16384 - len(head) - len(b"\r\n\r\n")
    response = b""
    with connect(live) as sock:
        sock.sendall(head + b"a" * pad + b"\r\n\r\n")
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            assert chunk, response
            response += chunk
    assert status(response) == 200


def test_unbounded_request_headers_too_many_fields_gets_431(live: support.ServerProcess) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(101))
    sock = connect(live)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    answer = read_all(sock)
    sock.close()
    assert status(answer) == 431, answer[:200]
    # 100 fields in all (Host, Connection and 98 more) pass.
    with connect(live) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + fields[: fields.index(b"X-F98:")]
            + b"\r\n"
        )
        assert status(read_all(sock)) == 200


@pytest.mark.parametrize("finish", [False, True], ids=["unfinished", "finished"])
def test_unbounded_request_headers_a_64_mib_head_is_cut_off_cheaply(
    live: support.ServerProcess, finish: bool
) -> None:
    """Today httptools joins the value read by read (quadratic): ~7 s of CPU for 64 MiB. The
    server must stop reading at the limit; 2 s of CPU is a generous correctness bound."""
    before = support.cpu_seconds(pid(live))
    sent = flood_head(live, 64 << 20, finish=finish)
    used = support.cpu_seconds(pid(live)) - before
    assert sent < 64 << 20, "the server read a 64 MiB head to the end"
    assert used < 2.0, f"the server spent {used:.2f} s of CPU on one oversized head"
    assert healthz(live) == 200


def test_unbounded_request_headers_a_chunked_body_with_a_64_mib_trailer_is_cut_off(
    live: support.ServerProcess,
) -> None:
    """Trailers are header fields too: parsed the same way, they get the head's budget."""
    sock = connect(live)
    before = support.cpu_seconds(pid(live))
    sent = 0
    total = 64 << 20
    block = b"a" * 65536
    try:
        body = b"grant_type=client_credentials"
        sock.sendall(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\nX-Trailer: " % (len(body), body)
        )
        while sent < total:
            sent += sock.send(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    used = support.cpu_seconds(pid(live)) - before
    assert sent < total, "the server read a 64 MiB trailer to the end"
    assert used < 2.0, f"the server spent {used:.2f} s of CPU on one oversized trailer"


# ---------------------------------------------------------------- slow clients


def wait_closed(sock: socket.socket, *, trickle: bytes = b"") -> bool:
    """Poll until the server closes ``sock``; with ``trickle``, send one byte of it every 0.2 s
    meanwhile (a slowloris that never stalls for long). False if the guard ran out first."""
    deadline = time.monotonic() + HANG_GUARD
    position = 0
    while time.monotonic() < deadline:
        if closed_by_server(sock):
            return True
        if trickle:
            try:
                sock.send(trickle[position % len(trickle) : position % len(trickle) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True
            position += 1
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(
    ("opening", "trickle"),
    [
        (b"", b""),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b""),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a"),
    ],
    ids=["a connection that sends nothing", "a head that stalls", "a head sent a byte at a time"],
)
def test_unbounded_request_headers_a_slow_head_is_disconnected(
    live: support.ServerProcess, opening: bytes, trickle: bytes
) -> None:
    sock = connect(live)
    sock.sendall(opening)
    assert wait_closed(sock, trickle=trickle), "the server kept a slow head's connection open"
    sock.close()


def test_unbounded_request_headers_a_stalled_head_gets_408(live: support.ServerProcess) -> None:
    sock = connect(live)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = read_all(sock)  # the server answers when ISSUER_HEADER_TIMEOUT runs out, then closes
    sock.close()
    assert status(answer) == 408, answer[:200]


def test_unbounded_request_headers_a_stalled_body_is_cut(live: support.ServerProcess) -> None:
    sock = connect(live)
    sock.sendall(
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\ngrant_type="
    )
    assert wait_closed(sock), "the server kept a stalled body's connection open"
    sock.close()


def test_unbounded_request_headers_an_answer_before_the_body_ends_the_connection(
    live: support.ServerProcess,
) -> None:
    """A 413 for a declared 64 MiB body goes out before the body is read: the server then stops
    reading (the client still gets the 413) instead of taking the whole body after it."""
    sock = connect(live)
    sock.sendall(
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 67108864\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(65536)
        assert chunk, response
        response += chunk
    assert status(response) == 413, response[:200]
    sent = 0
    block = b"a" * 65536
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while sent < 64 << 20:
            sent += sock.send(block)
    sock.close()
    assert sent < 64 << 20, "the server read the whole body of a request it had refused"


def test_unbounded_request_headers_a_kept_alive_connection_still_works(live: support.ServerProcess) -> None:
    """The timers are per request: a kept-alive connection serves request after request, each
    one's head and body arriving in pieces within the limits."""
    with httpx.Client(base_url=live.url, timeout=HANG_GUARD) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
    sock = connect(live)
    for _ in range(3):
        sock.sendall(b"POST /token HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.1)
        sock.sendall(b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\n\r\n")
        time.sleep(0.1)
        sock.sendall(b"grant_type=")
        time.sleep(0.1)
        sock.sendall(b"unsupported1")
        response = b""
        while b"}" not in response:  # one JSON error body
            chunk = sock.recv(65536)
            assert chunk, response
            response += chunk
        assert status(response) == 401, response[:300]  # no client credentials: invalid_client
    sock.close()


# ---------------------------------------------------------------- the server keeps answering


def test_unbounded_request_headers_healthz_answers_during_an_attack(live: support.ServerProcess) -> None:
    """Four unfinished 64 MiB heads and 50 slow connections at once; ``/healthz`` answers all
    along, and the server ends every attacking connection itself."""
    slow = [connect(live) for _ in range(50)]
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    cut: list[bool] = []
    floods = [
        threading.Thread(target=lambda: cut.append(flood_head(live, 64 << 20) < 64 << 20), daemon=True)
        for _ in range(4)
    ]
    probes: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            probes.append(healthz(live))
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for flood in floods:
            flood.start()
        deadline = time.monotonic() + HANG_GUARD  # one guard for the whole attack
        for flood in floods:
            flood.join(max(0.0, deadline - time.monotonic()))
        open_ = set(slow)
        while open_ and time.monotonic() < deadline:
            open_ = {sock for sock in open_ if not closed_by_server(sock)}
            time.sleep(0.2)
    finally:
        stop.set()
        prober.join(HANG_GUARD)
        for sock in slow:
            sock.close()
    assert cut == [True] * 4, "a 64 MiB head was not cut off"
    assert not open_, f"{len(open_)} of 50 slow connections were never closed"
    assert probes and set(probes) == {200}, probes


# ---------------------------------------------------------------- connection cap


def test_unbounded_request_headers_connections_over_the_cap_get_503(tmp_path: Path, sqlite_url: str) -> None:
    env = support.issuer_env(
        sqlite_url, tmp_path / "keys", ISSUER_MAX_CONNECTIONS="5", ISSUER_RETRY_AFTER="3"
    )
    with support.running_server(env, tmp_path / "server.log") as server:
        held = [connect(server) for _ in range(5)]
        # Held connections count once the server has accepted them: a request on each proves it.
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status(sock.recv(65536)) == 200
        extra = connect(server)
        answer = read_all(extra)  # refused before it is read: nothing to send
        extra.close()
        assert status(answer) == 503, answer[:200]
        assert b"retry-after: 3" in answer.lower()
        for sock in held:
            sock.close()
        deadline = time.monotonic() + HANG_GUARD  # until the server has seen the closes
        while healthz_status(server) != 200:
            assert time.monotonic() < deadline, "the cap did not free up after the connections closed"
            time.sleep(0.1)


def healthz_status(server: support.ServerProcess) -> int:
    try:
        return healthz(server)
    except httpx.HTTPError:
        return 0
