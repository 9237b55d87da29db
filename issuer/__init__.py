"""issuer: an OAuth 2 token server (short-lived JWT access tokens, rotating refresh tokens).

The package imports nothing at import time: ``issuer.app.create_app`` builds the HTTP app and
``issuer.cli`` the command. Subsystems are subpackages: :mod:`issuer.keys`, :mod:`issuer.revocation`,
:mod:`issuer.grants`, :mod:`issuer.http`, :mod:`issuer.store`, :mod:`issuer.cli` and
:mod:`issuer.observability`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("issuer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
