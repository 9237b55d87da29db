"""Revocation: ending tokens before they expire.

- :mod:`issuer.revocation.denylist`: the denylist of access tokens (database record, Redis fan-out).
- :mod:`issuer.revocation.service`: RFC 7009 revocation, RFC 7662 introspection and operators'
  session revocation, as plain async functions over the stores.
"""
