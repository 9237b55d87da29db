"""A rolling restart under load loses no request and no refresh family.

Two instances on one PostgreSQL and one Redis, behind the test's own round-robin balancer (what a
load balancer does, in a few lines): client threads alternate between them doing
client_credentials and refresh chains while each instance in turn is taken out of rotation,
sent SIGTERM (uvicorn stops accepting, finishes what is in flight, the Runtime closes), and
replaced by a new process on the same port that joins the rotation once ``/readyz`` says 200.

The balancer drains an instance before its SIGTERM (out of rotation, then the requests already
sent to it answered), as a load balancer's deregistration delay does: a connection the kernel
had queued but the server never accepted is reset when the listener closes, and no server can
answer that one. ``test_sigterm_finishes_a_request_in_flight`` shows the other half: a request
the server has begun is finished after SIGTERM.

What counts as lost: any 5xx, and any transport error after a connection was made (a reset, a
connection closed without a response, a timeout). The balancer retries only a refused
connection, on the other instance: nothing was sent, so nothing can have been processed. At the
end every chain must still rotate on both instances.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from base64 import b64encode
from collections import Counter
from pathlib import Path

import httpx

from tests import support
from tests.revocation.support import Client, Deployment, login, refresh, until

THREADS = 4
REQUESTS_PER_THREAD = 400  # the bound; the threads also stop once both restarts are done


class Balancer:
    """Round-robin over the instances in rotation; a refused connection goes to the next one.

    Like a real load balancer it drains an instance before it is stopped: :meth:`drain` takes it
    out of rotation and returns once the requests already sent to it have been answered.
    """

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.up = set(urls)
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.inflight: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.lost: list[str] = []
        self.wrong: list[str] = []  # answers other than 200 (a family lost would show here)

    def drain(self, url: str) -> None:
        with self._lock:
            self.up.discard(url)
        assert until(lambda: self.inflight[url] == 0, hang_guard=60)

    def _pick(self, tried: set[str]) -> str | None:
        with self._lock:
            start = next(self._next)
            for i in range(len(self.urls)):
                url = self.urls[(start + i) % len(self.urls)]
                if url in self.up and url not in tried:
                    self.inflight[url] += 1
                    return url
        return None

    def post(self, path: str, auth: tuple[str, str], data: dict[str, str]) -> httpx.Response | None:
        tried: set[str] = set()
        while (url := self._pick(tried)) is not None:
            tried.add(url)
            try:
                # a fresh connection per request: no idle keep-alive connection to lose on shutdown
                response = httpx.post(
                    url + path, auth=auth, data=data, headers={"Connection": "close"}, timeout=30
                )
            except httpx.ConnectError:
                with self._lock:
                    self.counts["refused, sent to the other instance"] += 1
                continue
            except httpx.TransportError as error:
                with self._lock:
                    self.lost.append(f"{path} {type(error).__name__}: {error}")
                return None
            finally:
                with self._lock:
                    self.inflight[url] -= 1
            with self._lock:
                self.counts[str(response.status_code)] += 1
                if response.status_code >= 500:
                    self.lost.append(f"{path} {response.status_code}: {response.text}")
            return response
        with self._lock:
            self.lost.append(f"{path}: no instance in rotation answered")
        return None


def _client_load(
    balancer: Balancer, app: Client, done: threading.Event, chains: list[str], index: int
) -> None:
    token = chains[index]
    for n in range(REQUESTS_PER_THREAD):
        if done.is_set() and n % 2 == 0:
            break
        if n % 2:
            response = balancer.post("/token", app.auth, {"grant_type": "client_credentials"})
            if response is not None and response.status_code != 200:
                balancer.wrong.append(f"client_credentials {response.status_code}: {response.text}")
        else:
            response = balancer.post(
                "/token", app.auth, {"grant_type": "refresh_token", "refresh_token": token}
            )
            if response is None:
                continue  # counted as lost; the chain goes on with the token we have (grace window)
            if response.status_code != 200:
                balancer.wrong.append(f"refresh {response.status_code}: {response.text}")
                break
            token = response.json()["refresh_token"]
    chains[index] = token


def test_rolling_restart_under_load(
    pg_url: str, redis_prefix: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        ISSUER_URL="https://issuer.test",
        ISSUER_RATE_LIMIT_PASSWORD="0",  # one user logs in many times from one address
        **key_env,
    )
    deployment = Deployment(env, tmp_path)
    app = deployment.client("app", "password", "refresh_token", "client_credentials")
    deployment.user("alice")
    info = ("--log-level", "info")  # uvicorn's shutdown messages
    instances = [support.ServerProcess(env, args=info), support.ServerProcess(env, args=info)]
    for i, instance in enumerate(instances):
        instance.start(tmp_path / f"instance-{i}-0.log")
    balancer = Balancer([instance.url for instance in instances])
    try:
        chains = [login(instances[i % 2].url, app)["refresh_token"] for i in range(THREADS)]
        done = threading.Event()
        threads = [
            threading.Thread(target=_client_load, args=(balancer, app, done, chains, i), daemon=True)
            for i in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        assert until(lambda: balancer.counts["200"] >= 100, hang_guard=60)
        for i, old in enumerate(instances):
            balancer.drain(old.url)  # out of rotation; what was sent to it is answered
            assert old.proc is not None
            old.proc.terminate()
            # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit
            assert old.proc.wait(timeout=30) in (0, -15), old.log()
            assert "Application shutdown complete" in old.log()  # the lifespan closed the Runtime
            assert "Traceback" not in old.log()
            served_before = balancer.counts["200"]
            new = support.ServerProcess(env, port=old.port, args=info)
            new.start(tmp_path / f"instance-{i}-1.log", timeout=60)
            assert until(lambda u=new.url: httpx.get(u + "/readyz").status_code == 200)
            instances[i] = new
            balancer.up.add(new.url)
            assert until(lambda s=served_before: balancer.counts["200"] >= s + 50, hang_guard=60)
        # the load runs to a count, not a time: a slow machine takes longer, it does not do less
        assert until(lambda: balancer.counts["200"] >= 300, hang_guard=60)
        done.set()
        for thread in threads:
            thread.join(timeout=120)
            assert not thread.is_alive()

        assert balancer.lost == [], balancer.lost
        assert balancer.wrong == [], balancer.wrong
        assert balancer.counts["200"] >= 300, balancer.counts
        # no family was lost: every chain still rotates, on each new instance in turn
        for token in chains:
            for instance in instances:
                response = refresh(instance.url, app, token)
                assert response.status_code == 200, response.text
                token = response.json()["refresh_token"]
    finally:
        for instance in instances:
            instance.stop()


def test_sigterm_finishes_a_request_in_flight(server_env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM while a request is half sent: the listener closes, the request is still answered."""
    deployment = Deployment(server_env, tmp_path)
    app = deployment.client("app", "client_credentials")
    server = support.ServerProcess(server_env, args=("--log-level", "info")).start(tmp_path / "server.log")
    try:
        body = b"grant_type=client_credentials"
        basic = b64encode(f"{app.client_id}:{app.secret}".encode()).decode()
        head = (
            f"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {basic}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head + body[:5])  # the server is now reading this request's body
            time.sleep(0.5)  # let it parse the headers (not an assertion on time: an ordering)
            assert server.proc is not None
            server.proc.terminate()
            # the listener closes: a new connection is refused while the old request is pending
            assert until(lambda: _refused(server.port), hang_guard=20)
            sock.sendall(body[5:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert b'"access_token"' in answer
        assert server.proc.wait(timeout=30) in (0, -15)
        assert "Application shutdown complete" in server.log()
    finally:
        server.stop()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
