"""An unreachable database is a 503 with Retry-After, never a 500, and the server recovers.

The server talks to the real PostgreSQL through a TCP relay the test can cut (tests.support.TcpProxy).
"""

from __future__ import annotations

import time
from urllib.parse import urlparse

from tests import support

PASSWORD = support.PASSWORD


def test_database_outage_is_503_with_retry_after_and_recovers(pg_url, tmp_path, key_env) -> None:
    target = urlparse(pg_url)
    proxy = support.TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    proxied = pg_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
    env = support.issuer_env(
        proxied, tmp_path / "keys", ISSUER_CLIENT_CACHE_TTL="0", ISSUER_RETRY_AFTER="7", **key_env
    )
    auth = support.register_client(env, scope="read")
    support.add_user(env)
    server = support.ServerProcess(env).start(tmp_path / "server.log")
    try:
        login = support.post(
            server.url + "/token",
            auth=auth,
            data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        )
        assert login.status_code == 200, login.text
        refresh_token = login.json()["refresh_token"]

        proxy.stop()
        requests = [
            {"grant_type": "client_credentials"},
            {"grant_type": "password", "username": "alice", "password": PASSWORD},
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
        ]
        for data in requests:
            response = support.post(server.url + "/token", auth=auth, data=data, timeout=30)
            assert response.status_code == 503, (data["grant_type"], response.text)
            assert response.headers["retry-after"] == "7"
            assert response.headers["cache-control"] == "no-store"
            assert response.json()["error"] == "temporarily_unavailable"
        # Discovery needs no database: it keeps answering from the loaded key ring.
        assert support.get(server.url + "/.well-known/jwks.json").status_code == 200

        proxy.start()
        statuses = []
        for _ in range(10):  # the pool drops its dead connections; bounded number of tries
            response = support.post(
                server.url + "/token",
                auth=auth,
                data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            )
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            assert response.status_code == 503, response.text
            time.sleep(0.2)
        assert statuses[-1] == 200, statuses  # the refresh token survived the outage unspent
        assert "Traceback" not in server.log()
    finally:
        server.stop()
        proxy.stop()
