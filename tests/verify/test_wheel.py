"""The two distributions as a user installs them: wheels built from this repository, each into a
fresh virtual environment that knows nothing of the source tree.

* ``issuer-verify`` alone: none of the server's stack is installed with it, and in that
  environment's Python it verifies a live token from a running issuer; with its ``[redis]``
  extra, its Redis-fed denylist copy refuses the token once the issuer has revoked it.
* ``issuer`` with ``issuer-verify``: ``issuer db upgrade`` migrates a new SQLite file, so the
  migrations ship inside the server's wheel.

The wheels are built once per test session (build isolation fetches hatchling; pip's cache makes
the installs quick after the first run).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import issuer_verify
from tests import support
from tests.verify.support import Issuer

ROOT = support.ROOT
SERVER_STACK = ("litestar", "sqlalchemy", "sqlmodel", "asyncpg", "aiosqlite", "alembic", "argon2", "issuer")
INSTALL_TIMEOUT = 900  # a cold pip cache on a busy machine


@dataclass(frozen=True)
class Wheels:
    verifier: Path
    server: Path


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would let the source tree leak in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, timeout: float = INSTALL_TIMEOUT, **env: str) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _venv(where: Path) -> Venv:
    _run([sys.executable, "-m", "venv", str(where)], where.parent)
    return Venv(where)


def _pip_install(venv: Venv, *requirements: str) -> None:
    _run(
        # --no-compile: byte-compiling every installed module costs a third of the install's CPU;
        # what the tests import compiles when imported
        [
            venv.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            *requirements,
        ],
        venv.path,
    )


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    out = tmp_path_factory.mktemp("wheels")
    for project in (ROOT / "verifier", ROOT):
        _run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(project)],
            out,
        )
    (verifier,) = out.glob("issuer_verify-*.whl")
    (server,) = out.glob("issuer-*.whl")
    return Wheels(verifier, server)


@pytest.fixture(scope="module")
def verifier_venv(wheels: Wheels, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    venv = _venv(tmp_path_factory.mktemp("verifier-venv") / "venv")
    _pip_install(venv, str(wheels.verifier))
    return venv


def _importable(venv: Venv, modules: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]))\n"
    )
    return list(json.loads(_run([venv.python, "-c", code, *modules], venv.path)))


def test_the_server_and_the_verifier_are_released_together() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    verifier = tomllib.loads((ROOT / "verifier" / "pyproject.toml").read_text())["project"]
    assert f"issuer-verify=={verifier['version']}" in server["dependencies"]
    assert issuer_verify.__version__ == verifier["version"]
    assert verifier["dependencies"] == ["cryptography>=44", "PyJWT>=2.10", "httpx>=0.27"]


def test_the_verifier_wheel_installs_without_the_server_stack(verifier_venv: Venv) -> None:
    assert _importable(verifier_venv, SERVER_STACK) == []
    assert _importable(verifier_venv, ("redis",)) == []  # only with the [redis] extra
    assert _importable(verifier_venv, ("issuer_verify", "jwt", "cryptography", "httpx")) == [
        "issuer_verify",
        "jwt",
        "cryptography",
        "httpx",
    ]
    frozen = _run([verifier_venv.python, "-m", "pip", "freeze", "--all"], verifier_venv.path)
    names = {line.split("==")[0].split(" @ ")[0].lower() for line in frozen.splitlines() if line}
    assert not names & {"litestar", "sqlalchemy", "sqlmodel", "asyncpg", "alembic", "argon2-cffi", "issuer"}


PLAIN = """
import json, sys
from issuer_verify import Verifier
issuer, token = sys.argv[1], sys.argv[2]
with Verifier(issuer=issuer, audience=issuer) as verifier:
    claims = verifier.verify(token)
print(json.dumps({"client_id": claims["client_id"], "module": Verifier.__module__}))
"""

# Accepts the token, waits for the test to revoke it, then polls until the copy refuses it.
WITH_DENYLIST = """
import sys, time
from issuer_verify import InvalidToken, RedisDenylist, Verifier
issuer, redis_url, prefix, token = sys.argv[1:5]
denylist = RedisDenylist(redis_url, prefix=prefix)
with Verifier(issuer=issuer, audience=issuer, denylist=denylist) as verifier:
    assert denylist.wait_ready(60), "the denylist copy never loaded"
    verifier.verify(token)
    print("accepted", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + 60
    while True:
        try:
            verifier.verify(token)
        except InvalidToken as error:
            print(error.reason, flush=True)
            break
        if time.monotonic() > deadline:
            print("still accepted", flush=True)
            break
        time.sleep(0.02)
"""


def test_the_verifier_wheel_alone_verifies_a_live_token_with_and_without_the_denylist(
    wheels: Wheels, verifier_venv: Venv, redis_issuer: Issuer, redis_prefix: str
) -> None:
    issuer = redis_issuer
    token = issuer.token()
    out = json.loads(_run([verifier_venv.python, "-c", PLAIN, issuer.url, token], verifier_venv.path))
    assert out == {"client_id": issuer.client_id, "module": "issuer_verify.core"}

    _pip_install(verifier_venv, f"{wheels.verifier}[redis]")
    assert _importable(verifier_venv, SERVER_STACK) == []  # the extra brings redis-py only
    with subprocess.Popen(
        [verifier_venv.python, "-c", WITH_DENYLIST, issuer.url, support.REDIS_URL, redis_prefix, token],
        cwd=verifier_venv.path,
        env=_clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            first = proc.stdout.readline().strip()
            assert first == "accepted", first + proc.stderr.read()
            revoked = support.post(
                issuer.url + "/revoke", data={"token": token}, auth=(issuer.client_id, issuer.client_secret)
            )
            assert revoked.status_code == 200, revoked.text
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "revoked", proc.stderr.read()
            assert proc.wait(60) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_server_wheel_ships_its_migrations(wheels: Wheels, tmp_path: Path) -> None:
    venv = _venv(tmp_path / "venv")
    _pip_install(venv, str(wheels.server), str(wheels.verifier))
    database = tmp_path / "fresh.db"
    env = support.issuer_env(f"sqlite:///{database}", tmp_path / "keys")
    result = subprocess.run(
        [venv.bin("issuer"), "db", "upgrade"],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "clients", "signing_keys", "refresh_tokens", "denylist"} <= tables
    imported = _run([venv.python, "-c", "import issuer, issuer_verify; print(issuer.__file__)"], tmp_path)
    assert str(venv.path) in imported  # the wheel's package, not the source tree
