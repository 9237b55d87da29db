"""Verifications per second per core, per algorithm: issuer_verify with and without the denylist
check, next to PyJWT with a preloaded key and raw ``cryptography`` signature verification.

    taskset -c 0 .venv/bin/python bench/verify.py [--seconds 2] [--denylist-size 10000]

Keys are generated locally and the Verifier gets the JWKS document directly (no network), so
every figure is pure CPU on one core. The denylist copy holds ``--denylist-size`` entries of each
kind, none matching the benchmarked token (the common case: the check runs to its end). Each
figure is the best of five interleaved rounds; compare ratios within one run (LIMITS.md: the VM drifts).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from issuer.keys.ring import public_jwk
from issuer_verify import Verifier
from issuer_verify.denylist import Denylist

ISSUER = "https://issuer.example"
AUDIENCE = "https://api.example"
OPTIONS: Any = {"require": ["exp", "iat", "iss", "aud", "sub", "jti"]}


def rate(fn: Callable[[], Any], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn()
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            break
    return count / (now - start)


def best_rates(variants: list[Callable[[], Any]], seconds: float, rounds: int = 5) -> list[float]:
    """Best rate of each variant over interleaved rounds, so drift hits all of them alike."""
    best = [0.0] * len(variants)
    for _ in range(rounds):
        for i, fn in enumerate(variants):
            best[i] = max(best[i], rate(fn, seconds / rounds))
    return best


def raw_verifier(alg: str, key: Any, token: str) -> Callable[[], None]:
    head, payload, sig = token.split(".")
    signature = jwt.utils.base64url_decode(sig)
    data = f"{head}.{payload}".encode()
    public = key.public_key()
    if alg == "ES256":
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        ecdsa = ec.ECDSA(hashes.SHA256())
        return lambda: public.verify(der, data, ecdsa)
    if alg == "RS256":
        pkcs, sha = padding.PKCS1v15(), hashes.SHA256()
        return lambda: public.verify(signature, data, pkcs, sha)
    return lambda: public.verify(signature, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per figure (five rounds)")
    parser.add_argument("--denylist-size", type=int, default=10000, help="entries per kind in the copy")
    args = parser.parse_args()
    now = int(time.time())
    denylist = Denylist(max_staleness=60)
    for kind in ("jti", "sid", "sub", "client", "kid"):
        denylist.merge(
            {"kind": kind, "value": f"{kind}-{i}", "at": now, "exp": now + 3600}
            for i in range(args.denylist_size)
        )
    denylist.confirm()

    rows = []
    for alg, key in (
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ):
        jwk = public_jwk(key, alg)
        claims = {
            "iss": ISSUER,
            "sub": "usr_alice",
            "aud": AUDIENCE,
            "exp": now + 3600,
            "iat": now,
            "jti": "jti-benchmarked",
            "client_id": "cli_web",
            "scope": "read write",
            "sid": "sid_benchmarked",
        }
        token = jwt.encode(claims, key, algorithm=alg, headers={"kid": jwk["kid"], "typ": "at+jwt"})
        plain = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [jwk]})
        checked = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [jwk]}, denylist=denylist)
        assert plain.verify(token) == claims and checked.verify(token) == claims
        pyjwt_key = jwt.PyJWK(jwk).key

        def pyjwt_decode(token: str = token, k: Any = pyjwt_key, a: str = alg) -> Any:
            return jwt.decode(token, k, algorithms=[a], audience=AUDIENCE, issuer=ISSUER, options=OPTIONS)

        raw, lean, with_denylist, pyjwt_rate = best_rates(
            [
                raw_verifier(alg, key, token),
                lambda v=plain, t=token: v.verify(t),
                lambda v=checked, t=token: v.verify(t),
                pyjwt_decode,
            ],
            args.seconds,
        )
        rows.append((alg, raw, lean, with_denylist, pyjwt_rate))

    sample = {"jti": "x", "sid": "y", "sub": "z", "client_id": "w", "iat": now}
    check = rate(lambda: denylist.check("kid-none", sample), args.seconds)

    print(f"verifications/s on one core (best of 5 interleaved rounds; denylist: {len(denylist)} entries)\n")
    print(
        "| alg | raw cryptography verify | issuer_verify | issuer_verify + denylist "
        "| PyJWT decode (preloaded key) | issuer_verify / raw |"
    )
    print("|---|---|---|---|---|---|")
    for alg, raw, lean, with_denylist, pyjwt_rate in rows:
        print(
            f"| {alg} | {raw:,.0f} | {lean:,.0f} | {with_denylist:,.0f} | {pyjwt_rate:,.0f} "
            f"| {lean / raw:.0%} |"
        )
    # The with/without difference drowns in the VM's noise; the check itself is measured alone.
    print(f"\nDenylist check alone (what the + denylist column adds): {1e6 / check:.2f} µs per token.")


if __name__ == "__main__":
    main()
