"""``scripts/rotate_keys.py`` as an operator runs it, over the server's settings.

The script is run as a separate process where the process is what is tested (its first run, the
concurrent runs from cron); elsewhere its entry point runs in this process with exactly the given
environment and standard input (an interpreter start with the server's imports costs a second or
more per run on a busy machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from issuer.keys.material import b64encode
from tests import support

SCRIPT = support.ROTATE_KEYS


def run_process(env: dict[str, str], *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], env=env, input=input, capture_output=True, text=True, timeout=60
    )


run = support.run_rotate_keys_here


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rotate_keys.py: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path, key_env: dict[str, str]) -> dict[str, str]:
    return support.issuer_env(sqlite_url, tmp_path / "keys", **key_env)


def keys_of(env: dict[str, str]) -> dict[str, str]:
    proc = run(env, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {k["kid"]: k["state"] for k in json.loads(proc.stdout)["keys"]}


def test_status_rotate_and_status_again(env: dict[str, str]) -> None:
    empty = run_process(env, "status", "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout)["keys"] == []
    first = run_process(env, "rotate")
    assert first.returncode == 0 and first.stdout.startswith("create-active ")
    again = run(env, "rotate")
    assert again.returncode == 0 and again.stdout.startswith("nothing due")
    report = json.loads(run(env, "status", "--json").stdout)
    assert report["jwks_max_age"] == 3600 and report["algorithm"] == "ES256"
    (key,) = report["keys"]
    assert key["state"] == "active" and key["next"] == "retired" and key["next_at"] > report["now"]
    text = run(env, "status")
    assert text.returncode == 0 and key["kid"] in text.stdout and "max-age 3600" in text.stdout
    dry = run(env, "rotate", "--force", "--dry-run")
    assert (
        dry.returncode == 0 and dry.stdout.startswith("would create-active") and "unknown kid" in dry.stderr
    )
    assert keys_of(env) == {key["kid"]: "active"}  # the dry run changed nothing


def test_concurrent_rotate_runs_perform_the_step_once(
    pg_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(pg_url, tmp_path / "keys", **key_env)
    assert run(env, "rotate").returncode == 0
    changed = dict(env, ISSUER_SIGNING_ALG="RS256")  # an algorithm change makes create-next due now
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_process(changed, "rotate"), range(4)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    outputs = sorted(r.stdout.split()[0] for r in results)
    assert outputs == ["create-next", "nothing", "nothing", "nothing"]
    assert sorted(keys_of(env).values()) == ["active", "next"]


def test_revoke_asks_unless_yes(env: dict[str, str]) -> None:
    run(env, "rotate")
    (kid,) = keys_of(env)
    for answer in ("", "n\n", "no\n", "maybe\n"):
        refused = run(env, "revoke", kid, input=answer)
        assert refused.returncode == 1 and refused.stderr.startswith(f"Revoke signing key {kid}?")
        assert refused.stderr.strip().splitlines()[-1] == (
            "rotate_keys.py: error: not confirmed; nothing revoked (use --yes to skip the question)"
        )
        assert keys_of(env) == {kid: "active"}
    confirmed = run(env, "revoke", kid, input="yes\n")
    assert confirmed.returncode == 0 and f"revoked {kid}" in confirmed.stdout
    states = keys_of(env)
    assert states[kid] == "revoked" and sorted(states.values()) == ["active", "revoked"]
    fresh = next(k for k, s in states.items() if s == "active")
    forced = run(env, "revoke", fresh, "--yes")
    assert forced.returncode == 0 and f"revoked {fresh}" in forced.stdout and "active " in forced.stdout
    assert "already revoked" in one_line_error(run(env, "revoke", kid, "--yes"))


@pytest.mark.parametrize(
    ("args", "extra_env", "expect"),
    [
        (("rotate", "--bogus"), {}, "no such option"),
        (("revoke",), {}, "missing argument"),
        (("explode",), {}, "no such command"),
        (("revoke", "nope", "--yes"), {}, "no signing key"),
        (("status",), {"ISSUER_KEY_PUBLISH_AHEAD": "5", "ISSUER_KEY_RELOAD_INTERVAL": "10"}, "must exceed"),
        (("status",), {"ISSUER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}, "unreachable"),
        (("rotate",), {"ISSUER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}, "unreachable"),
        (("rotate",), {"ISSUER_KEY_ENCRYPTION_KEY": ""}, "does not exist"),
        (("rewrap",), {}, "exactly one way"),
        (("rewrap", "--new-kek-file", "/nonexistent"), {}, "cannot read"),
    ],
    ids=[
        "unknown option",
        "missing kid",
        "unknown command",
        "unknown kid",
        "contradicting settings",
        "unreachable database (status)",
        "unreachable database (rotate)",
        "no key-encryption key: never created by the script",
        "rewrap without a new key",
        "rewrap with an unreadable file",
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    env: dict[str, str], args: tuple[str, ...], extra_env: dict[str, str], expect: str
) -> None:
    proc = run({**env, **extra_env}, *args)
    assert expect in one_line_error(proc).lower()
    assert not (Path(env["ISSUER_KEYS_DIR"]) / "kek").exists()


def test_an_unmigrated_database_is_refused(
    empty_pg_url: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    env = support.issuer_env(empty_pg_url, tmp_path / "keys", **key_env)
    assert "issuer db upgrade" in one_line_error(run(env, "rotate"))


def test_rewrap_takes_the_new_key_from_the_environment_or_a_file(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "rotate")
    run(env, "rotate", "--force")
    new = b64encode(b"\x01" * 32)
    proc = run({**env, "ISSUER_NEW_KEY_ENCRYPTION_KEY": new}, "rewrap")
    assert proc.returncode == 0 and "re-wrapped 2 key(s)" in proc.stdout
    assert "ISSUER_KEY_ENCRYPTION_KEY" in proc.stderr  # how to switch over
    after = {**env, "ISSUER_KEY_ENCRYPTION_KEY": new}
    assert "not the one that wrapped" in one_line_error(run(env, "rotate", "--force"))  # old KEK refused
    assert run(after, "rotate", "--force").returncode == 0
    # from a generated file, then from stdin
    target = tmp_path / "kek.new"
    generated = run(after, "rewrap", "--generate-to", str(target))
    assert generated.returncode == 0 and target.stat().st_mode & 0o077 == 0
    newer = {**env, "ISSUER_KEY_ENCRYPTION_KEY": target.read_text().strip()}
    third = b64encode(b"\x03" * 32)
    assert run(newer, "rewrap", "--new-kek-file", "-", input=third + "\n").returncode == 0
    assert run({**env, "ISSUER_KEY_ENCRYPTION_KEY": third}, "rotate", "--force").returncode == 0


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"A" * 5000, "larger than 4096 bytes"),  # a log file given by mistake
        (b"\x00\x01\xfe\xff" * 16, "not text"),  # a binary (a DER key, an image)
        (b"", "one line"),
        (b"not a key at all", "one line"),
        (b"!!" + b64encode(b"\x05" * 32).encode() + b"\n", "not base64url"),  # b64decode would skip "!!"
        (b64encode(b"\x05" * 16).encode() + b"\n", "32 bytes"),
    ],
    ids=["too large", "binary", "empty", "words", "stray characters", "too short"],
)
def test_rewrap_new_kek_file_bounded(
    env: dict[str, str], tmp_path: Path, content: bytes, expect: str
) -> None:
    """Issue 14, point 9: ``--new-kek-file`` reads at most 4 KiB, and a file that is not one
    base64url key fails with one line and a non-zero exit, as does the same on stdin; nothing is
    re-wrapped."""
    run(env, "rotate")
    before = keys_of(env)
    path = tmp_path / "kek.candidate"
    path.write_bytes(content)
    assert expect in one_line_error(run(env, "rewrap", "--new-kek-file", str(path)))
    assert expect in one_line_error(run(env, "rewrap", "--new-kek-file", "-", input=content))
    assert keys_of(env) == before
    assert run(env, "rotate", "--force").returncode == 0  # still wrapped under the old key


def test_rewrap_new_kek_file_reads_no_more_than_its_bound(env: dict[str, str]) -> None:
    """/dev/zero never ends: the bounded read stops after 4 KiB and fails in one line."""
    assert "larger than 4096 bytes" in one_line_error(run(env, "rewrap", "--new-kek-file", "/dev/zero"))


def test_a_kid_that_begins_with_a_dash_is_a_kid_not_an_option(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    """RFC 7638 thumbprints are base64url: about one kid in 64 begins with "-"."""
    from click.testing import CliRunner

    from issuer.cli.keys import keys

    env = {
        "ISSUER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{support.free_port()}/x",
        "ISSUER_KEYS_DIR": str(tmp_path / "keys"),
        **key_env,
    }
    result = CliRunner().invoke(keys, ["revoke", "-JvtJZQ7IdMQBONApTlhzoLq", "--yes"], env=env)
    assert "No such option" not in result.output and "Usage" not in result.output
    # parsed as `revoke KID --yes`: it went on to the database, which is not there
    assert result.exit_code == 1 and "database is unreachable" in result.output
