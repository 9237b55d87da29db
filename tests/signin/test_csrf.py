"""CSRF tokens of the sign-in forms: bound to the browser's cookie and to the form."""

from __future__ import annotations

import secrets

import pytest

from issuer.signin.csrf import CSRF

KEY = secrets.token_bytes(32)


def test_the_token_of_a_browser_passes_for_that_browser_and_that_form() -> None:
    csrf = CSRF(KEY)
    binding = secrets.token_urlsafe(32)
    assert csrf.check("login", binding, csrf.token("login", binding))


def test_another_instance_with_the_same_key_accepts_the_token() -> None:
    binding = secrets.token_urlsafe(32)
    assert CSRF(KEY).check("consent", binding, CSRF(KEY).token("consent", binding))


@pytest.mark.parametrize(
    ("purpose", "binding", "presented"),
    [
        pytest.param("login", "victim", None, id="a POST without the form's token fails (login CSRF)"),
        pytest.param("login", "victim", "", id="an empty token fails"),
        pytest.param("login", None, "token-of:attacker", id="a POST without the binding cookie fails"),
        pytest.param("login", "victim", "token-of:attacker", id="another browser's token fails"),
        pytest.param("consent", "victim", "token-of:victim", id="a token of another form fails"),
        pytest.param("login", "victim", "x" * 101, id="an overlong token fails"),
        pytest.param("login", "victim", "\u00e9" * 43, id="a non-ASCII token fails"),
        pytest.param("unknown", "victim", "token-of:victim", id="an unknown form fails"),
    ],
)
def test_a_token_that_is_not_this_browsers_for_this_form_fails(
    purpose: str, binding: str | None, presented: str | None
) -> None:
    csrf = CSRF(KEY)
    if presented is not None and presented.startswith("token-of:"):
        presented = csrf.token("login", presented.removeprefix("token-of:"))
    assert not csrf.check(purpose, binding, presented)


def test_another_key_makes_other_tokens() -> None:
    binding = secrets.token_urlsafe(32)
    assert not CSRF(secrets.token_bytes(32)).check("login", binding, CSRF(KEY).token("login", binding))


def test_a_token_needs_a_binding_and_a_known_form() -> None:
    with pytest.raises(ValueError, match="binding cookie"):
        CSRF(KEY).token("login", "")
    with pytest.raises(ValueError, match="unknown form"):
        CSRF(KEY).token("signup", "b")
