"""Every package that issuer/ imports is declared in pyproject's [project].dependencies, and the
runtime dependencies hold nothing that only the tests import."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TEST_ONLY = {"authlib", "joserfc", "pytest", "hypothesis", "schemathesis", "psycopg"}


def _normal(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        names.add(_normal(match.group()))
    return names


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere in ``package`` (function bodies and TYPE_CHECKING too),
    stdlib and relative imports left out, each with the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _first_party(module: str) -> bool:
    """A module of this repository (the issuer itself, or a package built from it)."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    if origin is None:
        return False
    where = Path(origin).resolve()
    return where.is_relative_to(ROOT) and not where.is_relative_to(Path(sys.prefix).resolve())  # not .venv


def test_every_imported_package_is_a_declared_dependency() -> None:
    declared = _declared(PROJECT["dependencies"])
    distributions = packages_distributions()
    undeclared = {}
    for module, files in imported_modules(ROOT / "issuer").items():
        if module == "issuer":
            continue
        if _first_party(module):  # e.g. issuer_verify, built from verifier/: declared by its own name
            candidates = {_normal(module)}
        else:
            candidates = {_normal(d) for d in distributions.get(module, [])}
            assert candidates, f"{module} (imported by {sorted(files)}) is not installed"
        if not candidates & declared:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported by issuer/ but not in [project].dependencies: {undeclared}"


def test_test_only_packages_are_not_runtime_dependencies() -> None:
    declared = _declared(PROJECT["dependencies"])
    assert not declared & TEST_ONLY
    assert not imported_modules(ROOT / "issuer").keys() & TEST_ONLY  # issuer/ imports none of them
    assert {"authlib", "joserfc"} <= _declared(PROJECT["optional-dependencies"]["test"])


def test_the_import_scan_sees_what_it_must() -> None:
    """The scan is not vacuous: it finds imports inside functions and maps them to distributions."""
    modules = imported_modules(ROOT / "issuer")
    assert {"msgspec", "jwt", "sqlalchemy", "litestar", "httptools"} <= modules.keys()
    assert "ipaddress" not in modules  # stdlib, imported inside a function in issuer/settings.py
    assert "PyJWT" in packages_distributions()["jwt"]
