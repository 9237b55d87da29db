"""JWKS handling: discovery, refetch discipline (garbage kids cause no fetch storm, counted at a
server), Cache-Control max-age and ETag revalidation, and a key that leaves the JWKS."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from issuer_verify import InvalidToken, Verifier
from tests import support
from tests.verify.support import Counting, Issuer, counting_server


class Clock:
    """Monotonic time the test moves forward (the verifier's cache clock; tokens use real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks_mirror(issuer: Issuer) -> Iterator[Counting]:
    """Serves the issuer's JWKS (max-age 600, with an ETag) and counts every request."""
    body = support.get(issuer.url + "/.well-known/jwks.json").content
    etag = '"v1"'

    def serve() -> tuple[int, dict[str, str], bytes]:
        return (
            200,
            {"Content-Type": "application/json", "Cache-Control": "public, max-age=600", "ETag": etag},
            body,
        )

    with counting_server({"/jwks.json": serve}) as mirror:
        yield mirror


def unknown_kid_tokens(issuer: Issuer, count: int) -> list[str]:
    """Tokens signed by the issuer's real key under random kids nobody published."""
    _, key = issuer.signing_key()
    return [unknown_kid_token(issuer, key) for _ in range(count)]


def unknown_kid_token(issuer: Issuer, key: Any) -> str:
    return jwt.encode(
        issuer.claims(), key, algorithm="ES256", headers={"kid": secrets.token_hex(8), "typ": "at+jwt"}
    )


def test_thousand_unknown_kids_cause_at_most_one_fetch_per_interval(
    issuer: Issuer, jwks_mirror: Counting
) -> None:
    clock = Clock()
    verifier = Verifier(
        issuer=issuer.url,
        audience=issuer.url,
        jwks_uri=jwks_mirror.url + "/jwks.json",
        refetch_interval=30,
        clock=clock,
    )
    with verifier:
        garbage = unknown_kid_tokens(issuer, 1000)
        genuine = issuer.token()
        verifier.verify(genuine)
        assert jwks_mirror.hits["/jwks.json"] == 1
        for round_ in range(1, 4):
            reasons = set()
            for token in garbage:
                try:
                    verifier.verify(token)
                except InvalidToken as error:
                    reasons.add(error.reason)
            assert reasons == {"unknown_key"}
            # within one interval: no refetch at all (the initial fetch was this interval's one)
            assert jwks_mirror.hits["/jwks.json"] == round_
            clock.now += 31  # the next interval: exactly one refetch for the next thousand
        assert verifier.verify(genuine)["jti"]


async def test_unknown_kids_in_async_code_cause_no_storm(issuer: Issuer, jwks_mirror: Counting) -> None:
    import asyncio

    clock = Clock()
    verifier = Verifier(
        issuer=issuer.url,
        audience=issuer.url,
        jwks_uri=jwks_mirror.url + "/jwks.json",
        refetch_interval=30,
        clock=clock,
    )
    with verifier:
        clock.now += 100  # nothing fetched yet: the first token fetches, concurrently with 199 more
        tokens = unknown_kid_tokens(issuer, 200)
        results = await asyncio.gather(*(verifier.verify_async(t) for t in tokens), return_exceptions=True)
        assert {r.reason for r in results if isinstance(r, InvalidToken)} == {"unknown_key"}
        assert jwks_mirror.hits["/jwks.json"] == 1


def test_discovery_and_max_age_with_etag_revalidation(issuer: Issuer) -> None:
    clock = Clock()
    with Verifier(issuer=issuer.url, audience=issuer.url, clock=clock) as verifier:
        token = issuer.token()
        verifier.verify(token)
        assert verifier.fetches == 1
        max_age = int(
            support.get(issuer.url + "/.well-known/jwks.json").headers["cache-control"].split("max-age=")[1]
        )
        clock.now += max_age - 1
        verifier.verify(token)
        assert verifier.fetches == 1  # still within max-age
        clock.now += 2
        verifier.verify(token)  # expired: a conditional request (304), keys kept
        assert verifier.fetches == 2


def test_metadata_naming_another_issuer_is_refused(issuer: Issuer) -> None:
    with Verifier(issuer=issuer.url + "/", audience=issuer.url) as verifier:
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(issuer.token())
        assert caught.value.reason == "unavailable"


def test_a_key_dropped_from_the_jwks_stops_verifying_after_the_cache(issuer: Issuer) -> None:
    document: dict[str, Any] = support.get(issuer.url + "/.well-known/jwks.json").json()
    current = {"body": json.dumps(document).encode()}

    def serve() -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json", "Cache-Control": "max-age=60"}, current["body"]

    clock = Clock()
    token = issuer.token()
    with counting_server({"/jwks.json": serve}) as mirror:
        with Verifier(
            issuer=issuer.url,
            audience=issuer.url,
            jwks_uri=mirror.url + "/jwks.json",
            refetch_interval=5,
            clock=clock,
        ) as verifier:
            verifier.verify(token)
            current["body"] = b'{"keys": []}'
            clock.now += 61
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(token)
            assert caught.value.reason == "unknown_key"


def test_unreachable_issuer_is_unavailable_not_a_crash() -> None:
    with Verifier(issuer="http://127.0.0.1:9", audience="x", timeout=1) as verifier:
        token = jwt.encode({"a": 1}, "k" * 32, algorithm="HS256", headers={"kid": "k", "typ": "at+jwt"})
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(token)
        assert caught.value.reason == "unavailable"
