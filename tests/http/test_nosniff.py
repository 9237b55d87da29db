"""``X-Content-Type-Options: nosniff`` on every response of the app: successes, OAuth errors,
the router's 404 and 405, body limits, ``/metrics`` and the JWKS (issue 14, point 9)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests import support

METRICS_TOKEN = "mt-" + "nosniff-metrics-token"


def test_nosniff_on_every_response(server_env: dict[str, str], tmp_path: Path) -> None:
    env = {**server_env, "ISSUER_METRICS_TOKEN": METRICS_TOKEN}
    app = support.register_client(env, grants=("client_credentials",))
    with (
        support.running_server(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url) as http,
    ):
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        token = http.post("/token", auth=app, data={"grant_type": "client_credentials"})
        access = token.json()["access_token"]
        answers = {
            "token": token,
            "jwks": http.get("/.well-known/jwks.json"),
            "metadata": http.get("/.well-known/oauth-authorization-server"),
            "openid configuration": http.get("/.well-known/openid-configuration"),
            "userinfo, client token (401)": http.get(
                "/userinfo", headers={"Authorization": f"Bearer {access}"}
            ),
            "healthz": http.get("/healthz"),
            "readyz": http.get("/readyz"),
            "metrics": http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}),
            "metrics without its token (404)": http.get("/metrics"),
            "unknown path (404)": http.get("/no/such/path"),
            "wrong method (405)": http.get("/token"),
            "wrong secret (401)": http.post(
                "/token", auth=(app[0], "ics_wrong"), data={"grant_type": "client_credentials"}
            ),
            "no grant type (400)": http.post("/token", auth=app, data={"scope": "read"}),
            "JSON body (415)": http.post(
                "/token", auth=app, content=json.dumps({"grant_type": "client_credentials"})
            ),
            "body too large (413)": http.post("/token", auth=app, content="a=" + "x" * 20000, headers=form),
            "revoke": http.post("/revoke", auth=app, data={"token": access}),
            "introspect, not allowed (403)": http.post("/introspect", auth=app, data={"token": access}),
            "revocations feed, not allowed": http.get("/revocations", auth=app),
        }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert {200, 400, 401, 403, 404, 405, 413, 415} <= set(statuses.values()), statuses
    missing = {
        name: answer.status_code
        for name, answer in answers.items()
        if answer.headers.get_list("x-content-type-options") != ["nosniff"]
    }
    assert not missing, f"no (or a repeated) X-Content-Type-Options: nosniff on {missing}"
