"""From SQLAlchemy rows to the stores' records: frozen dataclasses whose fields are the columns.

A store never hands a ``Row`` to its callers; it selects the columns a record declares and builds
the record with :func:`one` or :func:`every`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy.engine import Row

__all__ = ["every", "one"]

R = TypeVar("R")
AnyRow = Row[*tuple[Any, ...]]  # a row of any width


def one(record: type[R], row: AnyRow | None) -> R | None:
    """``row`` as a ``record`` (its columns by name), or None."""
    return None if row is None else record(**row._mapping)


def every(record: type[R], rows: Iterable[AnyRow]) -> list[R]:
    return [record(**row._mapping) for row in rows]
