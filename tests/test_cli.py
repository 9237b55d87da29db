"""The ``issuer`` command: --help everywhere, one-line errors with a non-zero exit, secrets never on argv.

Most commands run in this process (:func:`tests.support.run_cli_here`); the bad setting and the
password on standard input run the installed ``issuer`` as a process, as an operator does."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from issuer.cli import main
from tests import support


def all_commands(group: click.Group = main, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += all_commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


COMMANDS = all_commands()


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path, key_env: dict[str, str]) -> dict[str, str]:
    return support.issuer_env(sqlite_url, tmp_path / "keys", **key_env)


def test_the_documented_commands_exist() -> None:
    for command in [
        ("serve",),
        ("db", "upgrade"),
        ("clients", "create"),
        ("clients", "rotate-secret"),
        ("users", "create"),
        ("users", "set-password"),
        ("users", "disable"),
        ("users", "enable"),
        ("clients", "disable"),
        ("clients", "enable"),
        ("settings",),
        ("clients", "update"),
        ("sessions", "browser"),
        ("sessions", "end-browser"),
        ("sessions", "consents"),
        ("sessions", "revoke-consent"),
        ("bff", "serve"),
    ]:
        assert command in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "issuer")
def test_every_command_has_help(command) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    # Help text is real: every command says what it does.
    assert len(result.output.split("\n\n")[1].strip()) > 10


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (("clients", "create", "--name", "x", "--grant", "bogus"), None, "--grant"),
        (("clients", "create", "--grant", "password"), None, "--name"),
        (("clients", "create", "--name", "x", "--grant", "password", "--scope", 'a"b'), None, "scope"),
        (("clients", "create", "--name", "x", "--grant", "refresh_token"), None, "refresh_token"),
        (
            ("clients", "create", "--name", "x", "--grant", "client_credentials", "--access-token-ttl", "5"),
            None,
            "ttl",
        ),
        (("clients", "rotate-secret", "cli_nope"), None, "no client"),
        (("users", "create", "--username", "bob"), "", "no password"),
        (("users", "create", "--username", "bob"), "short\n", "password must be"),
        (("users", "set-password", "--username", "ghost"), "long enough pw\n", "no user"),
        (("users", "set-password", "--username", "ghost", "--keep-sessions"), "long enough pw\n", "no user"),
        (("users", "disable", "ghost"), None, "no user"),
        (("users", "enable", "ghost"), None, "no user"),
        (("users", "disable"), None, "USERNAME"),
        (("users", "disable", "bad\x01name"), None, "username"),
        (("clients", "disable", "cli_nope"), None, "no client"),
        (("clients", "enable", "cli_nope"), None, "no client"),
        (("clients", "enable"), None, "CLIENT_ID"),
        (("serve", "--port", "0"), None, "--port"),
        (("nonsense",), None, "nonsense"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(env, args, stdin, needle) -> None:
    result = support.run_cli_here(env, *args, input=stdin)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and needle.lower() in lines[0].lower(), result.stderr


def test_bad_setting_is_one_line(env) -> None:
    result = support.run_cli({**env, "ISSUER_SIGNING_ALG": "HS256"}, "clients", "list")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "issuer: error: ISSUER_SIGNING_ALG='HS256' is not one of ES256, RS256, EdDSA"
    ]


def test_unreachable_database_is_one_line(tmp_path, key_env) -> None:
    env = support.issuer_env(
        f"postgresql://postgres@127.0.0.1:{support.free_port()}/x", tmp_path / "k", **key_env
    )
    for args in (("clients", "list"), ("db", "upgrade")):
        result = support.run_cli_here(env, *args)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "database is unreachable" in lines[0], result.stderr


def test_db_upgrade_on_an_empty_postgresql(empty_pg_url, tmp_path, key_env) -> None:
    env = support.issuer_env(empty_pg_url, tmp_path / "keys", **key_env)
    assert (
        support.run_cli_here(env, "clients", "list").returncode == 1
    )  # not migrated yet: refused, not guessed
    result = support.run_cli_here(env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout
    assert support.run_cli_here(env, "clients", "list").returncode == 0


def test_clients_create_json_and_list_never_show_the_secret(env) -> None:
    result = support.run_cli_here(
        env,
        "clients",
        "create",
        "--name",
        "web",
        "--grant",
        "client_credentials",
        "--scope",
        "read write",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"client_id", "client_secret"}
    listing = support.run_cli_here(env, "clients", "list", "--json")
    assert created["client_secret"] not in listing.stdout
    (row,) = json.loads(listing.stdout)
    assert row["client_id"] == created["client_id"] and row["scope"] == "read write"


def test_users_create_reads_the_password_from_stdin(env) -> None:
    result = support.run_cli(env, "users", "create", "--username", "alice", input="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    assert "correct horse" not in result.stdout + result.stderr
    again = support.run_cli(env, "users", "create", "--username", "alice", input="correct horse battery\n")
    assert again.returncode == 1 and "taken" in again.stderr
    # There is no way to pass a password on the command line.
    assert support.run_cli(env, "users", "create", "--username", "bob", "--password", "x").returncode == 2
