"""Test support: real databases and real server processes, isolated per test and cleaned up.

* PostgreSQL: every test that asks for it gets its own database, cloned from a migrated
  template made once per run (``CREATE DATABASE ... TEMPLATE``), dropped afterwards.
* SQLite: a migrated file in the test's ``tmp_path``.
* Redis: a key prefix unique to the test (see ``redis_prefix`` in conftest).
* Servers: ``issuer serve`` subprocesses on free loopback ports (:class:`ServerProcess`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from issuer.keys.material import b64encode

__all__ = [
    "PASSWORD",
    "PG_ADMIN_URL",
    "REDIS_URL",
    "ServerProcess",
    "TcpProxy",
    "add_user",
    "cpu_seconds",
    "free_port",
    "get",
    "issuer_env",
    "listens",
    "pg_clone",
    "pg_drop",
    "post",
    "register_client",
    "request",
    "rss_bytes",
    "run_cli",
    "run_cli_here",
    "run_rotate_keys_here",
    "until_waiting_for_a_lock",
]

PG_ADMIN_URL = os.environ.get("ISSUER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ISSUER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent
ISSUER_BIN = str(Path(sys.executable).with_name("issuer"))

# The tests speak plain HTTP on loopback, but httpx builds a TLS context and loads the CA bundle
# for every client it makes, so for every httpx.get/post: about 40 ms of CPU each here, spent
# thousands of times in a run (the readiness polls alone). These are httpx's functions (a new
# connection per call, as before) with one shared, default-verifying context.
TLS = ssl.create_default_context()
get = functools.partial(httpx.get, verify=TLS)
post = functools.partial(httpx.post, verify=TLS)
request = functools.partial(httpx.request, verify=TLS)


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def pg_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


def pg_create(name: str, template: str | None = None) -> str:
    with pg_admin() as conn:
        suffix = f" TEMPLATE {template}" if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{suffix}')  # type: ignore[arg-type]
    return _pg_url(name)


def pg_drop(name: str) -> None:
    with pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def pg_clone(template: str) -> tuple[str, str]:
    name = f"issuer_t_{os.getpid()}_{secrets.token_hex(4)}"
    return name, pg_create(name, template)


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on loopback ``port`` (Linux: the
    listening socket's inode in ``/proc/net/tcp`` among the process's file descriptors)."""
    local = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(descriptor) in inodes:
                return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def issuer_env(database_url: str, keys_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an issuer process: own keys, the given database, fast password hashing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(
        ISSUER_DATABASE_URL=database_url,
        ISSUER_KEYS_DIR=str(keys_dir),
        ISSUER_PASSWORD_HASH_MEMORY_KIB="8192",
        ISSUER_PASSWORD_HASH_TIME_COST="1",
        # tests log one user in many times from one address; tests/observe enables the limits
        ISSUER_RATE_LIMIT_PASSWORD="0",
        ISSUER_RATE_LIMIT_PASSWORD_ADDRESS="0",
        ISSUER_RATE_LIMIT_PASSWORD_GLOBAL="0",
        ISSUER_PASSWORD_HASH_QUEUE="100000",
    )
    env.update(extra)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (``/proc/PID/stat``, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (``/proc/PID/statm``, Linux)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_key() -> str:
    return b64encode(secrets.token_bytes(32))


class ServerProcess:
    """``issuer serve`` on a free loopback port, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, env: dict[str, str], *, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.chosen_port = port is None  # a port of our choosing may be taken again: see start
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.own_url = "ISSUER_URL" not in self.env
        self.env.setdefault("ISSUER_URL", self.url)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def start(self, log_path: Path, timeout: float = 90.0) -> ServerProcess:
        """Start and wait until this process answers on its port. A free port can be taken by
        another process between :func:`free_port` and the server's bind (other workers start
        servers too): the server then exits, and one of our choosing is chosen again."""
        for _ in range(5):
            if self._start(log_path, timeout):
                return self
            assert self.chosen_port and self.proc is not None
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            if self.own_url:
                self.env["ISSUER_URL"] = self.url
        raise RuntimeError(f"issuer serve found no free port:\n{self.log()}")

    def _start(self, log_path: Path, timeout: float) -> bool:
        # Generous: a start takes ~1 s here, but a CI machine busy with other work can take far longer.
        self.log_path = log_path
        with log_path.open("ab") as log:
            written = log.tell()  # this attempt's part of the log starts here
            self.proc = subprocess.Popen(
                [
                    ISSUER_BIN,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    *list(self.args),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(log_path.parent),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.chosen_port and "address already in use" in self.log()[written:]:
                    return False
                raise RuntimeError(f"issuer serve exited with {self.proc.returncode}:\n{self.log()}")
            # An HTTP request only once this process listens (see TLS above): another process on
            # the port would answer for it.
            if listens(self.proc.pid, self.port):
                try:
                    answer = get(self.url + "/.well-known/oauth-authorization-server", timeout=1)
                    if answer.status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"issuer serve did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running_server(env: dict[str, str], log_path: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(env, **kwargs).start(log_path)
    try:
        yield server
    finally:
        server.stop()


def run_cli(
    env: dict[str, str], *args: str, input: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ISSUER_BIN, *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cwd) if cwd else None,
    )


def run_cli_here(
    env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``issuer ARGS`` in this process (click's runner), answered like :func:`run_cli`: with
    exactly ``env`` (this process's other ``ISSUER_*`` variables unset), its exit code, standard
    output and standard error. A subprocess costs a second or more of interpreter start and
    imports per command on a busy machine; use this where the command's own behaviour is under
    test, not its process (signals, exit on a broken pipe). The command runs its own event loop
    (``asyncio.run``); called from a thread that runs one (an async test), it runs in a thread of
    its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _invoke_cli(env, args, input)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_invoke_cli, env, args, input).result()


def _scoped(env: dict[str, str]) -> dict[str, str | None]:
    """``env`` as an override of this process's environment: other ``ISSUER_*`` variables unset."""
    scoped: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ISSUER_")}
    scoped.update(env)
    return scoped


def _invoke_cli(
    env: dict[str, str], args: tuple[str, ...], input: str | None
) -> subprocess.CompletedProcess[str]:
    from click.testing import CliRunner

    from issuer.cli import main

    result = CliRunner().invoke(main, list(args), input=input, env=_scoped(env), prog_name="issuer")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess([ISSUER_BIN, *args], result.exit_code, result.stdout, result.stderr)


ROTATE_KEYS = str(ROOT / "scripts" / "rotate_keys.py")


def run_rotate_keys_here(
    env: dict[str, str], *args: str, input: str | bytes = ""
) -> subprocess.CompletedProcess[str]:
    """``scripts/rotate_keys.py ARGS`` through its entry point in this process, with exactly
    ``env`` and ``input`` on standard input: exit code, standard output and error as text (see
    :func:`run_cli_here` for when a process is needed instead)."""
    from click.testing import CliRunner

    from issuer.cli.keys import main as keys_main

    with CliRunner().isolation(input=input, env=_scoped(env)) as (out, err, _):
        code = keys_main(list(args))
    return subprocess.CompletedProcess(
        [ROTATE_KEYS, *args], code, out.getvalue().decode(), err.getvalue().decode()
    )


async def until_waiting_for_a_lock(db: Any, count: int) -> None:
    """Until ``count`` sessions of ``db``'s PostgreSQL database (an
    :class:`issuer.store.database.Database`) wait for a lock (a condition, not a time: the
    deadline only turns a hang into a failure)."""
    from sqlalchemy import text

    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        async with db.transaction() as conn:  # a new transaction each time: a fresh activity snapshot
            if (await conn.execute(query)).scalar_one() >= count:
                return
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} sessions wait for a lock"
        await asyncio.sleep(0.01)


class TcpProxy:
    """A loopback TCP relay in front of a real service, so a test can cut the service off
    (``stop``: refuse new connections and reset open ones) and bring it back (``start``)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


PASSWORD = "correct horse battery staple"
ALL_GRANTS = ("client_credentials", "password", "refresh_token")


def register_client(
    env: dict[str, str],
    *extra: str,
    name: str = "app",
    grants: tuple[str, ...] = ALL_GRANTS,
    scope: str = "read write",
) -> tuple[str, str]:
    """``issuer clients create --json`` (the operator's way); returns (client_id, client_secret)."""
    args = ["clients", "create", "--json", "--name", name, "--scope", scope]
    for grant in grants:
        args += ["--grant", grant]
    result = run_cli_here(env, *args, *extra)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return created["client_id"], created["client_secret"]


def add_user(env: dict[str, str], username: str = "alice", password: str = PASSWORD) -> str:
    """``issuer users create`` with the password on stdin; returns the user's subject."""
    result = run_cli_here(env, "users", "create", "--username", username, input=password + "\n")
    assert result.returncode == 0, result.stderr
    return result.stdout.split("subject ")[1].strip()
