from tests.verify.conftest import any_issuer

__all__ = ["any_issuer"]
