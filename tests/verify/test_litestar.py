"""examples/resource_server.py, protected by the Litestar guard, against a running issuer."""

from __future__ import annotations

from litestar.testing import TestClient

from examples.resource_server import create_app
from tests.verify.support import Issuer


def test_the_example_api_requires_a_valid_token_with_the_route_scope(issuer: Issuer) -> None:
    app = create_app({"RS_ISSUER": issuer.url, "RS_AUDIENCE": issuer.url})
    read_only = issuer.token("notes:read")
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        missing = client.get("/notes")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        bad = client.get("/notes", headers={"Authorization": "Bearer " + read_only[:-4]})
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        assert client.get("/notes", headers={"Authorization": "Bearer " + read_only}).json() == []
        denied = client.post("/notes", json={"text": "hi"}, headers={"Authorization": "Bearer " + read_only})
        assert denied.status_code == 403
        assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
        writer = issuer.token("notes:read notes:write")
        created = client.post("/notes", json={"text": "hi"}, headers={"Authorization": "Bearer " + writer})
        assert created.status_code == 201
        assert created.json()["author"] == issuer.client_id
