"""Discovery: RFC 8414 metadata and the OpenID Provider configuration (OpenID Connect Discovery
1.0, 3) say exactly what is supported, with the same caching."""

from __future__ import annotations

import pytest

from issuer.runtime import Runtime
from tests.signin.browser import app_client

pytestmark = pytest.mark.asyncio

OPENID_MEMBERS = {
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
    "claims_supported",
    "claims_parameter_supported",
    "request_parameter_supported",
    "request_uri_parameter_supported",
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_rfc8414_metadata_names_the_sign_in_endpoints_and_methods(signin_runtime: Runtime) -> None:
    base = signin_runtime.settings.url
    async with app_client(signin_runtime) as http:
        response = await http.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    document = response.json()
    assert document["authorization_endpoint"] == base + "/authorize"
    assert document["end_session_endpoint"] == base + "/logout"
    assert document["userinfo_endpoint"] == base + "/userinfo"
    assert document["response_types_supported"] == ["code"]
    assert document["response_modes_supported"] == ["query"]
    # RFC 7636 / OAuth 2.1: plain is never offered
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    # /revoke accepts public clients (client_id alone); /introspect never does
    assert document["revocation_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    assert document["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    # no fixed list of scopes: each client's registration decides
    assert "scopes_supported" not in document
    assert not OPENID_MEMBERS & document.keys()


async def test_openid_configuration_is_the_metadata_plus_the_openid_members(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        oauth = await http.get("/.well-known/oauth-authorization-server")
        openid = await http.get("/.well-known/openid-configuration")
    assert openid.status_code == 200
    assert openid.headers["cache-control"] == oauth.headers["cache-control"] == "public, max-age=300"
    assert openid.headers["content-type"] == "application/json"
    document = openid.json()
    # OpenID Connect Discovery 1.0, 4.3: issuer is exactly the URL the document was fetched under
    assert document["issuer"] == signin_runtime.settings.url
    assert {k: v for k, v in document.items() if k not in OPENID_MEMBERS} == oauth.json()
    assert document["subject_types_supported"] == ["public"]
    assert document["id_token_signing_alg_values_supported"] == [signin_runtime.settings.signing_alg]
    assert set(document["claims_supported"]) == {
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "sid",
        "preferred_username",
    }
    # request_uri_parameter_supported defaults to true: it must be said to be false
    assert document["request_uri_parameter_supported"] is False
    assert document["request_parameter_supported"] is False
    assert document["claims_parameter_supported"] is False
    # members that would only repeat a false default are left out
    assert "frontchannel_logout_supported" not in document
    assert "backchannel_logout_supported" not in document


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_advertised_alg_signs_the_id_tokens(signin_runtime: Runtime) -> None:
    async with app_client(signin_runtime) as http:
        document = (await http.get("/.well-known/openid-configuration")).json()
        jwks = (await http.get(document["jwks_uri"].removeprefix(signin_runtime.settings.url))).json()
    assert {key["alg"] for key in jwks["keys"]} == set(document["id_token_signing_alg_values_supported"])
