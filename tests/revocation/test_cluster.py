"""Many instances: two ``issuer serve`` processes sharing one PostgreSQL database and one Redis.

A revocation made through one instance is seen by the other as soon as the revoking request
has returned (both read the same Redis keys), and by a resource server's denylist copy
(issuer_verify's ``RedisDenylist``, fed by the channel).
Log-out-everywhere and client revocation go through the ``issuer sessions`` command.
"""

from __future__ import annotations

import json
import time

import jwt

from tests import support
from tests.revocation.support import (
    Deployment,
    active,
    login,
    refresh,
    refused,
    resource_server_copy,
    revoke,
    until,
)


def test_revocation_reaches_the_other_instance_and_subscribed_verifiers(
    cluster: Deployment, redis_prefix: str
) -> None:
    app = cluster.client("app", "password", "refresh_token")
    rs = cluster.client("rs", "client_credentials", introspect=True)
    cluster.user("alice")
    one, two = cluster.serve("one"), cluster.serve("two")
    with resource_server_copy(support.REDIS_URL, redis_prefix) as copy:
        # an access token, revoked by jti on instance one
        tokens = login(one.url, app)
        assert active(two.url, rs, tokens["access_token"])
        assert not refused(copy, tokens["access_token"])
        assert revoke(one.url, app, tokens["access_token"]).status_code == 200
        assert not active(two.url, rs, tokens["access_token"])  # no waiting: already true
        assert until(lambda: refused(copy, tokens["access_token"]))

        # a refresh token, revoked on instance two: the family's access tokens die on one
        tokens = login(two.url, app)
        assert active(one.url, rs, tokens["access_token"])
        assert not refused(copy, tokens["access_token"])
        assert revoke(two.url, app, tokens["refresh_token"]).status_code == 200
        assert not active(one.url, rs, tokens["access_token"])
        assert refresh(one.url, app, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        assert until(lambda: refused(copy, tokens["access_token"]))


def test_log_out_everywhere(cluster: Deployment) -> None:
    web = cluster.client("web", "password", "refresh_token")
    mobile = cluster.client("mobile", "password", "refresh_token")
    rs = cluster.client("rs", "client_credentials", introspect=True)
    subject = cluster.user("alice")
    cluster.user("bob")
    one, two = cluster.serve("one"), cluster.serve("two")
    sessions = [login(one.url, web), login(two.url, web), login(one.url, mobile), login(two.url, mobile)]
    bobs = login(one.url, web, "bob")
    rotated = refresh(two.url, web, sessions[0]["refresh_token"]).json()  # an access token from a refresh
    sessions[0] = dict(rotated)
    for tokens in sessions:
        assert active(one.url, rs, tokens["access_token"]) and active(two.url, rs, tokens["access_token"])

    listed = json.loads(cluster.cli("sessions", "list", "--subject", subject, "--json").stdout)
    assert len(listed) == 4 and {s["client_id"] for s in listed} == {web.client_id, mobile.client_id}
    assert all(s["state"] == "live" and s["last_used_at"] >= s["created_at"] for s in listed)

    out = cluster.cli("sessions", "revoke", "--subject", subject).stdout
    assert f"revoked every access token of subject {subject}" in out
    assert "revoked 4 session(s)" in out
    revoked_at = int(time.time())

    for tokens in sessions:
        for server in (one, two):
            assert not active(server.url, rs, tokens["access_token"])
            assert refresh(server.url, web, tokens["refresh_token"]).status_code == 400
            assert refresh(server.url, mobile, tokens["refresh_token"]).status_code == 400
    assert active(two.url, rs, bobs["access_token"])  # another user is untouched
    listed = json.loads(cluster.cli("sessions", "list", "--subject", subject, "--all", "--json").stdout)
    assert all(s["state"].startswith("revoked") for s in listed)

    # A new login afterwards works. Tokens issued in the revocation's own second, and up to
    # ISSUER_CLOCK_SKEW (default 1 s) later, are revoked too (fail closed: another instance's clock
    # may run ahead), so the new login waits until the clock has passed that cut-off.
    time.sleep(max(0.0, revoked_at + 1 + 1.05 - time.time()))
    fresh = login(two.url, web)
    assert active(one.url, rs, fresh["access_token"])
    again = refresh(one.url, web, fresh["refresh_token"])
    assert again.status_code == 200
    assert active(two.url, rs, again.json()["access_token"])


def test_revoke_a_client_and_a_single_session(cluster: Deployment) -> None:
    bad = cluster.client("compromised", "password", "refresh_token")
    good = cluster.client("good", "password", "refresh_token")
    rs = cluster.client("rs", "client_credentials", introspect=True)
    cluster.user("alice")
    one = cluster.serve("one")
    bad_tokens, good_tokens = login(one.url, bad), login(one.url, good)
    other_good = login(one.url, good)

    out = cluster.cli("sessions", "revoke", "--client", bad.client_id, "--reason", "leaked secret").stdout
    assert f"client {bad.client_id}" in out and "revoked 1 session(s)" in out
    assert not active(one.url, rs, bad_tokens["access_token"])
    assert refresh(one.url, bad, bad_tokens["refresh_token"]).status_code == 400
    assert active(one.url, rs, good_tokens["access_token"])

    sid = jwt.decode(good_tokens["access_token"], options={"verify_signature": False})["sid"]
    out = cluster.cli("sessions", "revoke", "--family", sid).stdout
    assert f"revoked session {sid}" in out
    assert not active(one.url, rs, good_tokens["access_token"])
    assert refresh(one.url, good, good_tokens["refresh_token"]).status_code == 400
    assert active(one.url, rs, other_good["access_token"])  # the user's other login goes on

    audit = [json.loads(line) for line in cluster.cli("audit", "tail", "--json").stdout.splitlines()]
    client_event = next(e for e in audit if e["event"] == "revocation.client")
    assert client_event["detail"]["reason"] == "leaked secret"
    assert client_event["detail"]["actor"] == "operator"
    assert any(e["event"] == "revocation.family" and e["family_id"] == sid for e in audit)
    text = cluster.cli("audit", "tail", "--since", "1h").stdout
    assert "revocation.client" in text and "revocation.sid" in text


def test_log_out_everywhere_without_redis(embedded: Deployment) -> None:
    """The embedded default: the server's in-process copy rereads the database at most a second old."""
    web = embedded.client("web", "password", "refresh_token")
    rs = embedded.client("rs", "client_credentials", introspect=True)
    subject = embedded.user("alice")
    server = embedded.serve("one")
    tokens = login(server.url, web)
    assert active(server.url, rs, tokens["access_token"])
    embedded.cli("sessions", "revoke", "--username", "alice")
    assert refresh(server.url, web, tokens["refresh_token"]).status_code == 400  # the database: at once
    assert until(lambda: not active(server.url, rs, tokens["access_token"]))
    listed = json.loads(embedded.cli("sessions", "list", "--subject", subject, "--all", "--json").stdout)
    assert [s["state"] for s in listed] == ["revoked (revoked by an operator)"]


def test_cli_usage_errors(embedded: Deployment) -> None:
    both = embedded.cli("sessions", "revoke", "--subject", "a", "--client", "b", ok=False)
    assert both.returncode == 2 and "exactly one of" in both.stderr
    unknown = embedded.cli("sessions", "revoke", "--family", "sid_nope", ok=False)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "no live session" in unknown.stderr
    no_client = embedded.cli("sessions", "revoke", "--client", "cli_nope", ok=False)
    assert no_client.returncode == 1 and "no client" in no_client.stderr
    no_user = embedded.cli("sessions", "list", "--username", "nobody", ok=False)
    assert no_user.returncode == 1 and "no user" in no_user.stderr
    bad_since = embedded.cli("audit", "tail", "--since", "yesterday-ish", ok=False)
    assert bad_since.returncode == 2 and "ISO 8601" in bad_since.stderr
