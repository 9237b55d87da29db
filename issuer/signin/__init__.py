"""Browser sign-in: authorization code + PKCE (RFC 6749 4.1, RFC 7636) and OpenID Connect.

- :mod:`issuer.signin.redirects`: which redirect URIs a client may register and how a request's
  URI matches one (RFC 6749 3.1.2, RFC 8252 7, RFC 9700 2.1).
- :mod:`issuer.signin.pkce`: the S256 challenge and the verifier's syntax (RFC 7636 4.1-4.6).
- :mod:`issuer.signin.csrf`: the forms' CSRF tokens, bound to the browser's cookie and the form.

The records (browser sessions, one-time codes, consents) are in :mod:`issuer.store.signin`.
"""
