"""The kid is the RFC 7638 thumbprint of the public JWK: the RFC's own example, and agreement with
joserfc for a key of every signing algorithm (an RS256 kid used to hash PyJWT's "key_ops" too)."""

from __future__ import annotations

import pytest
from joserfc.jwk import import_key

from issuer.keys.ring import _generate_private, public_jwk, thumbprint
from issuer.settings import SIGNING_ALGS

# RFC 7638 section 3.1: the example RSA key (its "alg" and "kid" are not covered) and its thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
    "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMic"
    "AtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPk"
    "sINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_rfc_7638_example_key_has_the_rfc_thumbprint() -> None:
    assert thumbprint(RFC7638_KEY) == RFC7638_THUMBPRINT


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_a_kid_is_the_thumbprint_joserfc_computes(alg: str) -> None:
    jwk = public_jwk(_generate_private(alg), alg)
    assert jwk["kid"] == thumbprint(jwk)
    # joserfc's key object hashes the RFC 7638 section 3.2 members only (its thumbprint(dict)
    # hashes every member given: PyJWT's RSA JWK has a "key_ops" that must not count).
    assert (
        jwk["kid"]
        == import_key({k: v for k, v in jwk.items() if k not in ("kid", "alg", "use")}).thumbprint()
    )


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "e": "AQAB"},
        {"kty": "XYZ", "x": "a"},
        {"n": "a", "e": "AQAB"},
        {"kty": "OKP", "crv": 1, "x": "a"},
    ],
    ids=["a member missing", "an unknown key type", "no key type", "a member not a string"],
)
def test_an_incomplete_jwk_has_no_thumbprint(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a complete public JWK"):
        thumbprint(jwk)
