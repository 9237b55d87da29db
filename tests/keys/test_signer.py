"""What :class:`issuer.keys.ring.Signer` signs: for every signing algorithm a compact JWS that
PyJWT and joserfc verify against the published JWK, with the claims as given. With ASCII claims
(control characters included) the token is byte for byte ``jwt.encode``'s for the deterministic
algorithms; DEL and non-ASCII characters are UTF-8 in the payload, not escapes, and still decode
to the same claims."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import import_key

from issuer.keys.ring import Signer, _generate_private, public_jwk
from issuer.settings import SIGNING_ALGS

CLAIMS: dict[str, Any] = {
    "iss": "https://issuer.example",
    "sub": "usr_1",
    "aud": ["https://api.example", "https://other.example"],
    "exp": int(time.time()) + 3600,
    "iat": int(time.time()) - 60,
    "jti": "j-1",
    "client_id": "cli_1",
    "scope": "read write",
}
# Deterministic signatures (RFC 8032 Ed25519, RSASSA-PKCS1-v1_5): the same input gives the same token.
DETERMINISTIC = [alg for alg in SIGNING_ALGS if alg in ("EdDSA", "RS256")]


def _payload(token: str) -> bytes:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _verify(token: str, private: Any, alg: str) -> dict[str, Any]:
    """The claims as PyJWT and joserfc both read them, against the published public JWK."""
    published = public_jwk(private, alg)
    by_pyjwt = jwt.decode(
        token, jwt.PyJWK(published).key, algorithms=[alg], options={"verify_aud": False, "verify_exp": False}
    )
    key = import_key({k: v for k, v in published.items() if k not in ("alg", "use")})
    with warnings.catch_warnings():  # joserfc warns that RFC 9864 deprecates the name "EdDSA"
        warnings.simplefilter("ignore", SecurityWarning)
        by_joserfc = jose_jwt.decode(token, key, algorithms=[alg]).claims
    assert by_pyjwt == by_joserfc
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": published["kid"], "typ": "at+jwt"}
    return by_pyjwt


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_a_signed_token_verifies_with_pyjwt_and_joserfc(alg: str) -> None:
    private = _generate_private(alg)
    signer = Signer(public_jwk(private, alg)["kid"], alg, private)
    token = signer.sign(CLAIMS)
    assert _verify(token, private, alg) == CLAIMS
    assert json.loads(_payload(token)) == CLAIMS
    assert list(json.loads(_payload(token))) == list(CLAIMS)  # the claims' order kept


@pytest.mark.parametrize("alg", DETERMINISTIC)
def test_ascii_claims_are_signed_exactly_as_jwt_encode_signs_them(alg: str) -> None:
    private = _generate_private(alg)
    kid = public_jwk(private, alg)["kid"]
    signer = Signer(kid, alg, private)
    claims = {**CLAIMS, "sub": 'a "quoted" \\ back/slash\ttab\nline\x01\x1f'}
    assert signer.sign(claims) == jwt.encode(claims, private, alg, headers={"kid": kid, "typ": "at+jwt"})


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_non_ascii_claims_are_utf8_and_read_back_the_same(alg: str) -> None:
    private = _generate_private(alg)
    signer = Signer(public_jwk(private, alg)["kid"], alg, private)
    claims = {**CLAIMS, "sub": "Zoë \u2028 \U0001f511 \x7f", "scope": "lecture écriture"}
    token = signer.sign(claims)
    payload = _payload(token)
    assert "Zoë".encode() in payload and b"\\u" not in payload  # UTF-8, not escapes
    assert json.loads(payload.decode("utf-8")) == claims
    assert _verify(token, private, alg) == claims
