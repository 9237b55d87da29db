"""A rolling restart under load loses no request and no refresh family.

Two instances on one PostgreSQL and one Redis, behind the round-robin balancer of
:mod:`tests.deploy.load` (what a load balancer does, in a few lines): client threads alternate
between them doing client_credentials and refresh chains while each instance in turn is taken
out of rotation, sent SIGTERM (uvicorn stops accepting, finishes what is in flight, the Runtime
closes), and replaced by a new process on the same port that joins the rotation once ``/readyz``
says 200.

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

import socket
import time
from base64 import b64encode
from pathlib import Path

from tests import support
from tests.deploy.load import Balancer, Chain, Load
from tests.revocation.support import Deployment, refresh, until

THREADS = 4
REQUESTS_PER_THREAD = 400  # the bound; the threads also stop once both restarts are done


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
        chains = [Chain.login(instances[i % 2].url, app) for i in range(THREADS)]
        # strict: a 503 is a failure here; no answer is counted (balancer.unanswered) and must not happen
        load = Load(balancer, app, chains, REQUESTS_PER_THREAD, cap=240, strict=True, logins=False)
        with load:
            assert load.wait_ok(100)
            for i, old in enumerate(instances):
                balancer.drain(old.url)  # out of rotation; what was sent to it is answered
                assert old.proc is not None
                old.proc.terminate()
                # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit
                assert old.proc.wait(timeout=30) in (0, -15), old.log()
                assert "Application shutdown complete" in old.log()  # the lifespan closed the Runtime
                assert "Traceback" not in old.log()
                served_before = load.ok
                new = support.ServerProcess(env, port=old.port, args=info)
                new.start(tmp_path / f"instance-{i}-1.log", timeout=60)
                assert until(lambda u=new.url: support.get(u + "/readyz").status_code == 200)
                instances[i] = new
                balancer.up.add(new.url)
                assert load.wait_ok(served_before + 50)
            # the load runs to a count, not a time: a slow machine takes longer, it does not do less
            assert load.wait_ok(300)

        assert balancer.unanswered == [], balancer.unanswered
        assert balancer.errors == [], balancer.errors
        assert balancer.problems == [], balancer.problems
        assert load.ok >= 300, balancer.counts
        # no family was lost: every chain still rotates, on each new instance in turn
        for chain in chains:
            token = chain.token
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
