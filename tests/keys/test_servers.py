"""Key rotation as the world sees it: real ``issuer serve`` processes, a resource server that caches
the JWKS exactly as long as it is told, PyJWT's ``PyJWKClient``, and the rotation script."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from issuer.keys import rotation
from issuer.keys.material import KeyMaterial
from issuer.keys.ring import PRIVATE_MEMBERS
from issuer.settings import load
from issuer.store.database import Database
from tests import support

JWKS = "/.well-known/jwks.json"


def register(env: dict[str, str]) -> tuple[str, str]:
    return support.register_client(env, name="api", grants=("client_credentials",), scope="")


def issue(url: str, auth: tuple[str, str]) -> str:
    response = support.post(url + "/token", data={"grant_type": "client_credentials"}, auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_each_algorithm_end_to_end_with_pyjwkclient(
    alg: str, sqlite_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(sqlite_url, tmp_path / "keys", ISSUER_SIGNING_ALG=alg, **key_env)
    with support.running_server(env, tmp_path / "server.log") as server:
        auth = register(env)
        token = issue(server.url, auth)
        header = jwt.get_unverified_header(token)
        assert header["alg"] == alg and header["typ"] == "at+jwt"
        signing_key = jwt.PyJWKClient(server.url + JWKS).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, signing_key.key, algorithms=[alg], audience=server.url, issuer=server.url)
        assert claims["client_id"] == auth[0]
        published = support.get(server.url + JWKS).json()["keys"]
        assert [k["kid"] for k in published] == [header["kid"]]
        assert all(not PRIVATE_MEMBERS & k.keys() for k in published)
        # the kid is the RFC 7638 thumbprint of the published key (its required members only)
        from joserfc.jwk import import_key

        assert import_key(published[0]).thumbprint() == header["kid"]


def test_jwks_cache_headers_and_conditional_requests(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(
        sqlite_url,
        tmp_path / "keys",
        ISSUER_KEY_PUBLISH_AHEAD="50",
        ISSUER_KEY_RELOAD_INTERVAL="1",
        ISSUER_KEY_ROTATION_INTERVAL="600",
        **key_env,
    )
    with support.running_server(env, tmp_path / "server.log") as server:
        first = support.get(server.url + JWKS)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "public, max-age=24"  # (50 - 1) // 2
        etag = first.headers["etag"]
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            cached = support.get(server.url + JWKS, headers={"If-None-Match": header})
            assert cached.status_code == 304 and cached.content == b"", header
            assert cached.headers["etag"] == etag and "max-age=24" in cached.headers["cache-control"]
        assert support.get(server.url + JWKS, headers={"If-None-Match": '"stale"'}).status_code == 200
        # a rotation step publishes a new key: the old ETag no longer matches
        step = support.run_rotate_keys_here(env, "rotate", "--force")
        assert step.returncode == 0, step.stderr
        deadline = time.monotonic() + 15
        while support.get(server.url + JWKS, headers={"If-None-Match": etag}).status_code == 304:
            assert time.monotonic() < deadline, "the server never reloaded the key ring"
            time.sleep(0.2)
        assert len(support.get(server.url + JWKS).json()["keys"]) == 2


class CachingResourceServer:
    """Verifies with a JWKS it caches for exactly the advertised max-age and never refetches early:
    an unknown kid here means the issuer broke its promise."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: dict[str, Any] = {}
        self.expires = 0.0
        self.fetches = 0

    def _jwks(self) -> dict[str, Any]:
        if time.monotonic() >= self.expires:
            response = support.get(self.url + JWKS, timeout=10)
            max_age = int(response.headers["cache-control"].split("max-age=")[1])
            self.keys = {k["kid"]: jwt.PyJWK(k) for k in response.json()["keys"]}
            self.expires = time.monotonic() + max_age
            self.fetches += 1
        return self.keys

    def verify(self, token: str) -> dict[str, Any]:
        kid = kid_of(token)
        keys = self._jwks()
        assert kid in keys, f"unknown kid {kid}: the issuer signed with a key this verifier could not know"
        key = keys[kid]
        return jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=self.url, issuer=self.url)


async def test_a_full_rotation_cycle_never_shows_a_verifier_an_unknown_kid(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str], material: KeyMaterial
) -> None:
    """Shortened timings: a key is active 6 s, published 4 s ahead; instances reload every second;
    max-age is (4 - 1) // 2 = 1 s. The script's rotation runs every half second, as cron would."""
    timings = {
        "ISSUER_KEY_ROTATION_INTERVAL": "6",
        "ISSUER_KEY_PUBLISH_AHEAD": "4",
        "ISSUER_KEY_RELOAD_INTERVAL": "1",
        "ISSUER_ACCESS_TOKEN_TTL": "10",
    }
    env = support.issuer_env(sqlite_url, tmp_path / "keys", **timings, **key_env)
    settings = load(env)
    db = Database(sqlite_url)
    try:
        with support.running_server(env, tmp_path / "server.log") as server:
            auth = register(env)
            verifier = CachingResourceServer(server.url)
            issued: list[tuple[str, dict[str, Any]]] = []
            kids: list[str] = []
            steps: list[str] = []
            started = time.monotonic()
            last_rotate = 0.0
            while len(set(kids)) < 4 and time.monotonic() - started < 60:
                if time.monotonic() - last_rotate >= 0.5:
                    result = await rotation.rotate(db, material, settings)
                    steps += [s.action for s in result.done]
                    last_rotate = time.monotonic()
                token = await asyncio.to_thread(issue, server.url, auth)
                issued.append((token, verifier.verify(token)))  # fresh tokens verify at once
                if not kids or kids[-1] != kid_of(token):
                    kids.append(kid_of(token))
                # every earlier token that has not expired still verifies, whichever key signed it
                now = time.time()
                for old, claims in issued:
                    if claims["exp"] > now + 1:
                        assert verifier.verify(old)["jti"] == claims["jti"]
                await asyncio.sleep(0.1)
            assert len(set(kids)) >= 4, f"only {kids} after 60 s; steps {steps}"
            assert steps.count("promote") >= 3 and "create-next" in steps
            assert verifier.fetches >= 3
            # the retired keys are still published while their tokens live
            published = {k["kid"] for k in support.get(server.url + JWKS).json()["keys"]}
            alive = {kid_of(t) for t, c in issued if c["exp"] > time.time() + 1}
            assert alive <= published
    finally:
        await db.close()


def _poll_kid(url: str, auth: tuple[str, str], want: str, deadline: float) -> str:
    while True:
        kid = kid_of(issue(url, auth))
        if kid == want or time.monotonic() > deadline:
            return kid
        time.sleep(0.1)


@pytest.mark.parametrize("via", ["reload interval", "redis"])
def test_two_servers_pick_up_a_rotation_done_by_the_script(
    via: str, pg_url: str, tmp_path: Path, key_env: dict[str, str], redis_prefix: str
) -> None:
    if via == "redis":
        # the interval alone would take an hour: only the Redis message can explain a quick pickup
        extra = {
            "ISSUER_REDIS_URL": support.REDIS_URL,
            "ISSUER_REDIS_PREFIX": redis_prefix,
            "ISSUER_KEY_RELOAD_INTERVAL": "3600",
            "ISSUER_KEY_PUBLISH_AHEAD": "7300",
            "ISSUER_KEY_ROTATION_INTERVAL": "86400",
        }
        promised = 5.0
    else:
        extra = {"ISSUER_KEY_RELOAD_INTERVAL": "1", "ISSUER_KEY_PUBLISH_AHEAD": "10"}
        promised = 1.0 + 5.0  # the interval, plus a slow machine's margin
    env = support.issuer_env(pg_url, tmp_path / "keys", **extra, **key_env)
    with (
        support.running_server(env, tmp_path / "a.log") as a,
        support.running_server(env, tmp_path / "b.log") as b,
    ):
        auth = register(env)
        before = {kid_of(issue(a.url, auth)), kid_of(issue(b.url, auth))}
        assert len(before) == 1  # the second instance found the first's key
        step = support.run_rotate_keys_here(env, "rotate", "--force")
        assert step.returncode == 0, step.stderr
        new = step.stdout.split()[1].rstrip(":")  # "create-active KID: forced by the operator"
        assert new not in before
        deadline = time.monotonic() + promised
        assert _poll_kid(a.url, auth, new, deadline) == new
        assert _poll_kid(b.url, auth, new, deadline) == new


def test_a_revoked_key_is_rejected_by_introspection_and_issuer_verify_at_once(
    pg_url: str, tmp_path: Path, key_env: dict[str, str], redis_prefix: str
) -> None:
    from issuer_verify import InvalidToken, Verifier
    from issuer_verify.denylist import RedisDenylist

    env = support.issuer_env(
        pg_url,
        tmp_path / "keys",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        **key_env,
    )
    with support.running_server(env, tmp_path / "server.log") as server:
        auth = register(env)
        created = support.run_cli_here(
            env,
            "clients",
            "create",
            "--json",
            "--name",
            "rs",
            "--grant",
            "client_credentials",
            "--can-introspect",
        )
        rs = json.loads(created.stdout)
        rs_auth = (rs["client_id"], rs["client_secret"])
        old = issue(server.url, auth)
        compromised = kid_of(old)
        verifier = Verifier(
            issuer=server.url,
            audience=server.url,
            jwks_uri=server.url + JWKS,
            refetch_interval=0.2,
            denylist=RedisDenylist(support.REDIS_URL, prefix=redis_prefix),
        )
        try:
            assert verifier.verify(old)["client_id"] == auth[0]  # the verifier now caches the key

            def introspect(token: str) -> bool:
                answer = support.post(
                    server.url + "/introspect", data={"token": token}, auth=rs_auth, timeout=10
                )
                assert answer.status_code == 200, answer.text
                return bool(answer.json()["active"])

            assert introspect(old)
            refused = support.run_rotate_keys_here(env, "revoke", compromised, input="")
            assert refused.returncode == 1 and introspect(old)  # not confirmed: nothing happened
            done = support.run_rotate_keys_here(env, "revoke", compromised, "--yes")
            assert done.returncode == 0, done.stderr
            assert not introspect(old)  # the database copy of the denylist decides at once
            deadline = time.monotonic() + 5
            while True:  # the verifier's copy arrives over Redis pub/sub
                try:
                    verifier.verify(old)
                except InvalidToken:
                    break
                assert time.monotonic() < deadline, "issuer_verify kept accepting a revoked key's token"
                time.sleep(0.05)
            deadline = time.monotonic() + 5  # announced over Redis: the server reloads at once
            while compromised in {k["kid"] for k in support.get(server.url + JWKS).json()["keys"]}:
                assert time.monotonic() < deadline, "the revoked key is still published"
                time.sleep(0.05)
            fresh = issue(server.url, auth)
            assert kid_of(fresh) != compromised
            # the new key is unknown to the verifier until it refetches, which it does at most once
            # per refetch_interval (a bounded rate: tokens with made-up kids cannot make it fetch)
            deadline = time.monotonic() + verifier.refetch_interval + 10
            while True:
                try:
                    claims = verifier.verify(fresh)
                    break
                except InvalidToken as error:
                    assert error.reason == "unknown_key" and time.monotonic() < deadline, error.reason
                    time.sleep(0.05)
            assert claims["client_id"] == auth[0] and introspect(fresh)
        finally:
            close = getattr(verifier, "close", None)
            if close is not None:
                close()


class Minter:
    """Asks for client_credentials tokens in a loop on a thread; records what each answer was."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.url = url
        self.auth = auth
        self.answers: list[tuple[float, float, int, str | None]] = []  # (sent, answered, status, kid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Minter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                response = client.post(
                    self.url + "/token", data={"grant_type": "client_credentials"}, auth=self.auth
                )
                kid = kid_of(response.json()["access_token"]) if response.status_code == 200 else None
                if response.status_code == 503:  # no usable key for a moment: retry, as told
                    assert response.headers["retry-after"] and response.json()["error"] == (
                        "temporarily_unavailable"
                    )
                self.answers.append((sent, time.monotonic(), response.status_code, kid))

    def wait_for(self, count: int, deadline: float) -> None:
        while len(self.answers) < count:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers"
            time.sleep(0.02)


def _revoked_signing_key_stops_signing(env: dict[str, str], tmp_path: Path) -> None:
    """Point 8 of issue 14: a long reload interval, tokens minted all along, `issuer keys revoke`
    run as the operator would. Within the denylist copy's refresh (about a second; polled with a
    generous deadline) no token carries the revoked kid any more and the JWKS no longer lists it."""
    with support.running_server(env, tmp_path / "server.log") as server:
        auth = register(env)
        compromised = kid_of(issue(server.url, auth))
        jwks = support.get(server.url + JWKS)
        assert [k["kid"] for k in jwks.json()["keys"]] == [compromised]
        with Minter(server.url, auth) as minter:
            minter.wait_for(5, time.monotonic() + 30)
            done = support.run_cli_here(env, "keys", "revoke", compromised, "--yes")
            assert done.returncode == 0, done.stderr
            revoked_at = time.monotonic()
            deadline = revoked_at + 15  # generous: the promise is about a second, the interval 3600 s
            while True:
                published = support.get(server.url + JWKS)
                last = minter.answers[-1]
                if (
                    compromised not in {k["kid"] for k in published.json()["keys"]}
                    and last[0] > revoked_at
                    and last[2] == 200
                    and last[3] != compromised
                ):
                    break
                assert time.monotonic() < deadline, (
                    f"{sum(a[3] == compromised for a in minter.answers if a[0] > revoked_at)} tokens "
                    "signed by the revoked key after its revocation; it is "
                    f"{'still' if compromised in published.text else 'no longer'} published"
                )
                time.sleep(0.05)
            settled = time.monotonic()
            minter.wait_for(len(minter.answers) + 20, settled + 30)
        later = [a for a in minter.answers if a[0] > settled]
        assert later and all(status == 200 and kid != compromised for _, _, status, kid in later)
        # once one token came from the successor, none came from the revoked key again
        first_new = next(
            a[1] for a in minter.answers if a[0] > revoked_at and a[2] == 200 and a[3] != compromised
        )
        assert not [a for a in minter.answers if a[0] > first_new and a[3] == compromised]
        assert published.headers["etag"] != jwks.headers["etag"]
        assert (
            support.get(server.url + JWKS, headers={"If-None-Match": jwks.headers["etag"]}).status_code == 200
        )
        fresh = issue(server.url, auth)
        assert kid_of(fresh) in {k["kid"] for k in published.json()["keys"]}
        signing_key = jwt.PyJWKClient(server.url + JWKS).get_signing_key_from_jwt(fresh)
        jwt.decode(fresh, signing_key.key, algorithms=["ES256", "RS256", "EdDSA"], audience=server.url)


def test_revoked_signing_key_stops_signing_without_redis(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(sqlite_url, tmp_path / "keys", ISSUER_KEY_RELOAD_INTERVAL="3600", **key_env)
    _revoked_signing_key_stops_signing(env, tmp_path)


def test_revoked_signing_key_stops_signing_with_redis(
    sqlite_url: str, tmp_path: Path, key_env: dict[str, str], redis_prefix: str
) -> None:
    env = support.issuer_env(
        sqlite_url,
        tmp_path / "keys",
        ISSUER_KEY_RELOAD_INTERVAL="3600",
        ISSUER_REDIS_URL=support.REDIS_URL,
        ISSUER_REDIS_PREFIX=redis_prefix,
        **key_env,
    )
    _revoked_signing_key_stops_signing(env, tmp_path)
