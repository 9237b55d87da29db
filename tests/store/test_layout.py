"""Every SQL statement of the server lives in ``issuer/store/``, and stores hand out records, not rows.

The BFF (``issuer/bff``) is another program with its own database (its sessions only): its SQL
lives in its one store module, ``issuer/bff/store.py``, and nowhere else of it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

import pytest

import issuer
import issuer.store

ROOT = Path(issuer.__file__).parent
# What builds or runs a statement; `sqlalchemy.exc` (errors) and `AsyncConnection` (a type) do not.
STATEMENT_MODULES = ("sqlalchemy", "sqlalchemy.sql", "sqlalchemy.sql.expression", "sqlalchemy.future")
STATEMENT_NAMES = {"select", "insert", "update", "delete", "text", "func", "exists", "or_", "and_"}


def _outside_the_store() -> list[Path]:
    return [
        path
        for path in sorted(ROOT.rglob("*.py"))
        if path.relative_to(ROOT).parts[0] not in ("store", "migrations")
        and path.relative_to(ROOT).parts != ("bff", "store.py")
    ]


@pytest.mark.parametrize("path", _outside_the_store(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_outside_the_store_builds_a_statement(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module in STATEMENT_MODULES:
                found += [alias.name for alias in node.names if alias.name in STATEMENT_NAMES]
            if node.module == "issuer.store.tables":
                found += [alias.name for alias in node.names]  # tables are the store's business
        if isinstance(node, ast.Attribute) and node.attr in ("execute", "exec_driver_sql"):
            if isinstance(node.value, ast.Name) and node.value.id == "conn":
                found.append(f"conn.{node.attr}")
    assert found == []


def _store_classes() -> list[type]:
    classes = []
    for info in pkgutil.iter_modules(issuer.store.__path__, "issuer.store."):
        module = importlib.import_module(info.name)
        classes += [
            value
            for name, value in vars(module).items()
            if name.endswith("Store") and inspect.isclass(value) and value.__module__ == module.__name__
        ]
    return classes


@pytest.mark.parametrize("store", _store_classes(), ids=lambda c: c.__name__)
def test_stores_return_frozen_dataclasses_not_rows(store: type) -> None:
    for name, method in inspect.getmembers(store, inspect.iscoroutinefunction):
        if name.startswith("_"):
            continue
        returned = typing.get_type_hints(method)["return"]
        assert "Row" not in repr(returned), f"{store.__name__}.{name} returns {returned!r}"
        for record in _classes_in(returned):
            if dataclasses.is_dataclass(record):
                params = record.__dataclass_params__  # type: ignore[attr-defined]
                assert params.frozen and hasattr(record, "__slots__"), record.__name__


def _classes_in(annotation: object) -> list[type]:
    if inspect.isclass(annotation):
        return [annotation]
    return [cls for arg in typing.get_args(annotation) for cls in _classes_in(arg)]


def test_every_store_is_listed_in_the_package_docstring() -> None:
    assert issuer.store.__doc__ is not None
    for store in _store_classes():
        assert store.__name__ in issuer.store.__doc__
