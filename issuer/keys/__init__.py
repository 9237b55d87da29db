"""Signing keys: the key ring a process signs and verifies with, the key material that protects
keys at rest, and their lifecycle (rotation, revocation, re-wrapping) with its announcements.

- :mod:`issuer.keys.ring`: the in-process ring (one signer, many verifiers; the JWKS).
- :mod:`issuer.keys.material`: the key-encryption key and the secret-hashing key.
- :mod:`issuer.keys.plan`: the pure rotation planner (the schedule, the steps due and pending).
- :mod:`issuer.keys.rotation`: the transitions that write (rotate, revoke, rewrap) and the status.
- :mod:`issuer.keys.announce`: telling the instances of a change over Redis, and listening.

The rows themselves are read and written by :class:`issuer.store.keys.KeyStore`.
"""
