"""Signing keys: the key ring a process signs and verifies with, the key material that protects
keys at rest, and their lifecycle (rotation, revocation, re-wrapping) with its announcements.

- :mod:`issuer.keys.ring`: the in-process ring (one signer, many verifiers; the JWKS).
- :mod:`issuer.keys.material`: the key-encryption key and the secret-hashing key.
- :mod:`issuer.keys.rotation`: the schedule, the plan and the transitions that write.
"""
