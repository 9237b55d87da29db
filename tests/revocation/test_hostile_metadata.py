"""Issue 14, point 5, over HTTP: a stolen refresh token replayed from a hostile "address" (a long
or non-ASCII ``X-Forwarded-For``) still revokes its login, on PostgreSQL and Redis.

The proxy header is trusted from loopback explicitly (``ISSUER_TRUSTED_PROXIES``), so the test
keeps working when that stops being the default. The same rule is tested with the address passed
directly to the grant, on both databases, in ``tests/store/test_hostile_metadata.py``.
"""

from __future__ import annotations

import json

import httpx
import jwt
import pytest

from issuer.store.bounded import ADDRESS_CHARS, stored_address
from tests import support
from tests.revocation.support import Client, Deployment, active, login

HOSTILE = {
    "long": "203.0.113." + "7" * 3000,
    "non-ascii (latin-1 bytes)": "\xff\xfe\xc3\x28 \x80\x81",
}


def _refresh(url: str, client: Client, token: str, forwarded_for: str) -> httpx.Response:
    return support.post(
        url + "/token",
        auth=client.auth,
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers={"X-Forwarded-For": forwarded_for.encode("latin-1")},  # type: ignore[dict-item]
    )


@pytest.mark.parametrize("name", list(HOSTILE))
def test_reuse_detection_with_hostile_forwarded_for(cluster: Deployment, name: str) -> None:
    hostile = HOSTILE[name]
    app = cluster.client("app", "password", "refresh_token")
    rs = cluster.client("rs", "client_credentials", introspect=True)
    cluster.user("alice")
    server = cluster.serve("one", ISSUER_TRUSTED_PROXIES="127.0.0.1")
    tokens = login(server.url, app)
    first = _refresh(server.url, app, tokens["refresh_token"], hostile)
    assert first.status_code == 200, first.text
    second = _refresh(server.url, app, first.json()["refresh_token"], hostile)
    assert second.status_code == 200, second.text
    reuse = _refresh(server.url, app, tokens["refresh_token"], hostile)  # the thief
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", reuse.text
    # The whole login is dead: the successor the owner holds, and the family's access tokens.
    after = _refresh(server.url, app, second.json()["refresh_token"], "192.0.2.1")
    assert after.json()["error"] == "invalid_grant"
    for access in (tokens["access_token"], second.json()["access_token"]):
        assert not active(server.url, rs, access)
    sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    events = [json.loads(line) for line in cluster.cli("audit", "tail", "--json").stdout.splitlines()]
    (reused,) = [e for e in events if e["event"] == "refresh_token.reuse_detected"]
    assert reused["family_id"] == sid
    assert reused["address"] == stored_address(hostile) and len(reused["address"]) <= ADDRESS_CHARS
    assert any(e["event"] == "revocation.sid" and e["family_id"] == sid for e in events)
