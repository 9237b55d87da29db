"""PKCE, S256 only (RFC 7636): the challenge's and the verifier's syntax, and the check."""

from __future__ import annotations

import pytest

from issuer.signin import pkce

# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_s256_is_the_rfc_7636_appendix_b_example() -> None:
    assert pkce.s256(RFC_VERIFIER) == RFC_CHALLENGE


def test_the_verifier_of_the_challenge_passes() -> None:
    assert pkce.verify(RFC_VERIFIER, RFC_CHALLENGE)


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param(None, id="a missing verifier fails"),
        pytest.param("", id="an empty verifier fails"),
        pytest.param(RFC_VERIFIER[:-1] + "Y", id="another verifier fails"),
        pytest.param(RFC_CHALLENGE, id="the challenge itself is not its verifier (no plain)"),
        pytest.param("a" * 42, id="42 characters are too few (4.1)"),
        pytest.param("a" * 129, id="129 characters are too many (4.1)"),
        pytest.param(RFC_VERIFIER[:-1] + "+", id="a character outside unreserved fails (4.1)"),
        pytest.param(RFC_VERIFIER + " ", id="trailing space fails"),
    ],
)
def test_a_wrong_or_malformed_verifier_fails(verifier: str | None) -> None:
    assert not pkce.verify(verifier, RFC_CHALLENGE)


def test_a_verifier_of_128_unreserved_characters_is_accepted() -> None:
    verifier = ("A-._~z09" * 16)[:128]
    assert pkce.verify(verifier, pkce.s256(verifier))


def test_an_s256_challenge_is_accepted() -> None:
    assert pkce.check_challenge(RFC_CHALLENGE, "S256") == RFC_CHALLENGE


@pytest.mark.parametrize(
    ("challenge", "method", "message"),
    [
        pytest.param(None, "S256", "code_challenge is required", id="a missing challenge is refused"),
        pytest.param(RFC_CHALLENGE, None, "must be S256", id="a missing method means plain: refused"),
        pytest.param(RFC_CHALLENGE, "plain", "must be S256", id="plain is refused"),
        pytest.param(RFC_CHALLENGE, "s256", "must be S256", id="the method is case-sensitive"),
        pytest.param(RFC_CHALLENGE[:-1], "S256", "not an S256 challenge", id="42 characters refused"),
        pytest.param(RFC_CHALLENGE + "=", "S256", "not an S256 challenge", id="padding is refused"),
        pytest.param("a" * 43 + "a", "S256", "not an S256 challenge", id="44 characters refused"),
    ],
)
def test_a_challenge_that_is_not_s256_is_refused(
    challenge: str | None, method: str | None, message: str
) -> None:
    with pytest.raises(pkce.PKCEError, match=message):
        pkce.check_challenge(challenge, method)
