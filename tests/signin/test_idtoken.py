"""ID tokens (issuer.signin.idtoken): minted by the key ring, read back as logout hints."""

from __future__ import annotations

import jwt
import pytest

from issuer.runtime import Runtime


def _public_key(runtime: Runtime, token: str) -> jwt.PyJWK:
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.PyJWK(next(k for k in runtime.keyring.jwks["keys"] if k["kid"] == kid))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_id_token_has_the_openid_claims_and_is_no_access_token(runtime: Runtime) -> None:
    token = runtime.id_tokens.mint(
        subject="usr_1", client_id="cli_a", auth_time=1000, session_id="bs_1", ttl=300, nonce="n-0"
    )
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT" and header["alg"] == "ES256"
    key = _public_key(runtime, token)
    claims = jwt.decode(token, key, algorithms=["ES256"], audience="cli_a", issuer=runtime.settings.url)
    assert claims["sub"] == "usr_1" and claims["azp"] == "cli_a"
    assert claims["auth_time"] == 1000 and claims["sid"] == "bs_1" and claims["nonce"] == "n-0"
    assert claims["exp"] - claims["iat"] == 300
    # An access token is not an ID token: the hint reader refuses its typ, and so does the
    # access-token reader the other way round.
    access = runtime.grants.minter.mint(subject="usr_1", client_id="cli_a", audience=("x",), scope="", ttl=60)
    assert runtime.id_tokens.read_hint(access.token) is None
    assert runtime.revocation.read_access_token(token) is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_hint_is_read_even_expired_but_never_when_forged(runtime: Runtime) -> None:
    old = runtime.id_tokens.mint(
        subject="usr_1", client_id="cli_a", auth_time=1, session_id="bs_1", ttl=60, now=1000
    )
    hint = runtime.id_tokens.read_hint(old)
    assert hint is not None
    assert (hint.subject, hint.client_id, hint.session_id) == ("usr_1", "cli_a", "bs_1")
    head, _body, signature = old.split(".")
    forged_body = jwt.utils.base64url_encode(
        b'{"iss":"%s","sub":"usr_2","aud":"cli_a"}' % runtime.settings.url.encode()
    )
    assert runtime.id_tokens.read_hint(f"{head}.{forged_body.decode()}.{signature}") is None
    assert runtime.id_tokens.read_hint("not-a-jwt") is None
    assert runtime.id_tokens.read_hint("") is None
    other = jwt.encode(
        {"iss": runtime.settings.url, "sub": "u", "aud": "c"}, "k" * 32, headers={"typ": "JWT"}
    )
    assert runtime.id_tokens.read_hint(other) is None
