"""Redirect URIs: registration rules and exact matching, loopback on any port.

RFC 6749 3.1.2, RFC 8252 7.1 and 7.3, RFC 9700 2.1 and 4.1 (open redirectors).
"""

from __future__ import annotations

import pytest

from issuer.signin.redirects import RedirectURIError, check_redirect_uri, matches


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("https://app.example/cb", id="https is registrable"),
        pytest.param("https://app.example:8443/cb?tenant=1", id="https with port and query"),
        pytest.param("http://127.0.0.1/cb", id="http on 127.0.0.1"),
        pytest.param("http://[::1]:8080/cb", id="http on [::1]"),
        pytest.param("http://localhost/cb", id="http on localhost"),
        pytest.param("com.example.app:/oauth2redirect", id="a private-use scheme of a native app"),
    ],
)
def test_registrable_redirect_uris(uri: str) -> None:
    assert check_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        pytest.param("/cb", "absolute", id="a relative URI is refused"),
        pytest.param("https://app.example/cb#x", "fragment", id="a fragment is refused (3.1.2)"),
        pytest.param("https://app.example/cb#", "fragment", id="an empty fragment is refused"),
        pytest.param("http://app.example/cb", "only on 127.0.0.1", id="http off loopback is refused"),
        pytest.param("http://127.0.0.1.evil.example/cb", "only on", id="a loopback-looking host is refused"),
        pytest.param("https://user@app.example/cb", "user information", id="userinfo is refused"),
        pytest.param("https://app.example:99999/cb", "invalid port", id="a port out of range is refused"),
        pytest.param("https:///cb", "no host", id="https without host is refused"),
        pytest.param("javascript:alert(1)", "scheme", id="javascript: is refused"),
        pytest.param("data:text/html,x", "scheme", id="data: is refused"),
        pytest.param("file:///etc/passwd", "scheme", id="file: is refused"),
        pytest.param("com.example.app://host/cb", "no authority", id="a private-use URI with authority"),
        pytest.param("HTTPS://app.example/cb", "lower-case scheme", id="an upper-case scheme is refused"),
        pytest.param("https://app.example/c b", "whitespace", id="a space is refused"),
        pytest.param("https://app.example/\u00e9", "non-ASCII", id="non-ASCII is refused"),
        pytest.param("https://[::1/cb", "not a URI", id="an unbalanced bracket is refused"),
        pytest.param("https://app.example/" + "a" * 2000, "1 to 2000", id="an overlong URI is refused"),
        pytest.param("", "1 to 2000", id="an empty URI is refused"),
    ],
)
def test_unregistrable_redirect_uris(uri: str, why: str) -> None:
    with pytest.raises(RedirectURIError, match=why):
        check_redirect_uri(uri)


REGISTERED = [
    "https://app.example/cb",
    "http://127.0.0.1/native",
    "http://[::1]:7000/v6",
    "com.example.app:/cb",
]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        pytest.param("https://app.example/cb", "https://app.example/cb", id="an exact match"),
        pytest.param("com.example.app:/cb", "com.example.app:/cb", id="a private-use exact match"),
        pytest.param("http://127.0.0.1:51234/native", "http://127.0.0.1/native", id="loopback on any port"),
        pytest.param("http://127.0.0.1/native", "http://127.0.0.1/native", id="loopback without port"),
        pytest.param("http://[::1]/v6", "http://[::1]:7000/v6", id="IPv6 loopback on another port"),
    ],
)
def test_matching_redirect_uris(requested: str, expected: str) -> None:
    assert matches(requested, REGISTERED) == expected


@pytest.mark.parametrize(
    "requested",
    [
        pytest.param("https://app.example/cb?x=1", id="an extra query is an open-redirect attempt"),
        pytest.param("https://app.example/cb/", id="an extra slash does not match"),
        pytest.param("https://app.example/cb#frag", id="a fragment does not match"),
        pytest.param("https://app.example:8443/cb", id="another port on a non-loopback URI"),
        pytest.param("https://APP.example/cb", id="the host is compared as written"),
        pytest.param("https://evil.example/cb", id="an unregistered URI does not match"),
        pytest.param("https://app.example.evil.example/cb", id="a suffix host does not match"),
        pytest.param("http://app.example/cb", id="http instead of https does not match"),
        pytest.param("http://127.0.0.1:5000/other", id="loopback on another path does not match"),
        pytest.param("http://127.0.0.1:5000/native?x=1", id="loopback with an extra query does not match"),
        pytest.param("http://localhost:5000/native", id="localhost is not 127.0.0.1"),
        pytest.param("http://user@127.0.0.1:5000/native", id="loopback with userinfo does not match"),
        pytest.param("http://127.0.0.1:99999/native", id="loopback with a bad port does not match"),
        pytest.param("https://127.0.0.1:5000/native", id="https on loopback is another URI"),
        pytest.param("", id="an empty URI does not match"),
        pytest.param("com.example.app:/cb/x", id="a private-use URI with another path"),
    ],
)
def test_non_matching_redirect_uris(requested: str) -> None:
    assert matches(requested, REGISTERED) is None
