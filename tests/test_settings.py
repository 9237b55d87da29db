"""Settings are validated at start with a message that names the variable; docs/settings.md lists them all."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from issuer.deployment import check_url
from issuer.settings import SPECS, Settings, SettingsError, load
from tests import support

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    settings = load({})
    assert settings.url == "http://127.0.0.1:8000"
    assert settings.database_url == "sqlite:///issuer.db"
    assert settings.redis_url is None
    assert settings.signing_alg == "ES256"
    assert settings.access_token_ttl == 300
    assert settings.default_audience == settings.url
    limits = (settings.max_header_bytes, settings.max_header_fields, settings.header_timeout)
    assert limits == (16384, 100, 10)
    assert (settings.body_timeout, settings.max_connections) == (30, 1000)
    assert settings.trusted_proxies == ()  # no forwarding header is believed unless proxies are listed
    assert settings.rate_limit_password_address == 30 and settings.rate_limit_password_global == 50


def test_forwarded_addresses_trusted_proxies_parse_addresses_and_networks() -> None:
    settings = load({"ISSUER_TRUSTED_PROXIES": " 10.0.0.5, 10.1.0.0/16,::1,fd00::/8 ,"})
    assert settings.trusted_proxies == ("10.0.0.5", "10.1.0.0/16", "::1", "fd00::/8")


def test_forwarded_addresses_bad_trusted_proxies_stop_serve_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ROOT / ".venv/bin/issuer"), "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "ISSUER_TRUSTED_PROXIES": "10.0.0.1/8"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ISSUER_TRUSTED_PROXIES" in lines[0] and "10.0.0.1/8" in lines[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISSUER_ACCESS_TOKEN_TTL": "five"}, "ISSUER_ACCESS_TOKEN_TTL='five' is not an integer"),
        ({"ISSUER_ACCESS_TOKEN_TTL": "1.5"}, "ISSUER_ACCESS_TOKEN_TTL"),
        ({"ISSUER_ACCESS_TOKEN_TTL": "0"}, "out of range"),
        ({"ISSUER_SIGNING_ALG": "HS256"}, "ISSUER_SIGNING_ALG='HS256' is not one of"),
        ({"ISSUER_SIGNING_ALG": "none"}, "ISSUER_SIGNING_ALG"),
        ({"ISSUER_URL": "ftp://x"}, "ISSUER_URL"),
        ({"ISSUER_URL": "http://x/"}, "trailing slash"),
        ({"ISSUER_DATABASE_URL": "mysql://x"}, "ISSUER_DATABASE_URL"),
        ({"ISSUER_REDIS_URL": "http://x"}, "ISSUER_REDIS_URL"),
        ({"ISSUER_REFRESH_IDLE_TTL": "7200", "ISSUER_REFRESH_ABSOLUTE_TTL": "3600"}, "must not exceed"),
        ({"ISSUER_REFRESH_GRACE": "301"}, "ISSUER_REFRESH_GRACE"),
        ({"ISSUER_ALLOW_INSECURE_URL": "maybe"}, "ISSUER_ALLOW_INSECURE_URL='maybe' is not a boolean"),
        ({"ISSUER_TRUSTED_PROXIES": "proxy.internal"}, "ISSUER_TRUSTED_PROXIES: 'proxy.internal' is not"),
        ({"ISSUER_TRUSTED_PROXIES": "10.0.0.5,10.1.2.3/16"}, "ISSUER_TRUSTED_PROXIES: '10.1.2.3/16'"),
        ({"ISSUER_TRUSTED_PROXIES": "*"}, "ISSUER_TRUSTED_PROXIES"),
        ({"ISSUER_RATE_LIMIT_PASSWORD_ADDRESS": "-1"}, "ISSUER_RATE_LIMIT_PASSWORD_ADDRESS"),
        ({"ISSUER_RATE_LIMIT_PASSWORD_GLOBAL": "many"}, "ISSUER_RATE_LIMIT_PASSWORD_GLOBAL"),
        ({"ISSUER_PASSWORD_HASH_QUEUE": "-1"}, "ISSUER_PASSWORD_HASH_QUEUE"),
        ({"ISSUER_MAX_HEADER_BYTES": "512"}, "ISSUER_MAX_HEADER_BYTES=512 is out of range"),
        ({"ISSUER_MAX_HEADER_FIELDS": "0"}, "ISSUER_MAX_HEADER_FIELDS=0 is out of range"),
        ({"ISSUER_HEADER_TIMEOUT": "0"}, "ISSUER_HEADER_TIMEOUT=0 is out of range"),
        ({"ISSUER_BODY_TIMEOUT": "never"}, "ISSUER_BODY_TIMEOUT='never' is not an integer"),
        ({"ISSUER_MAX_CONNECTIONS": "0"}, "ISSUER_MAX_CONNECTIONS=0 is out of range"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load(env)


@pytest.mark.parametrize(
    "raw",
    ["\u0663\u0660\u0660", "\uff13\uff10\uff10", "+300", "-300", "1_000", " 300", "300 ", "300\n", "0x12c"],
    ids=[
        "arabic-indic digits",
        "fullwidth digits",
        "a sign",
        "a minus",
        "underscores",
        "a leading space",
        "a trailing space",
        "a newline",
        "hex",
    ],
)
def test_nul_and_unicode_digits_integer_settings_are_exact_ascii(raw: str) -> None:
    """Issue 14 point 6 (NUL and Unicode digits): int() takes all of these; a setting must not."""
    with pytest.raises(SettingsError, match=r"ISSUER_ACCESS_TOKEN_TTL=.* is not an integer"):
        load({"ISSUER_ACCESS_TOKEN_TTL": raw})


def test_the_settings_page_lists_every_setting_with_its_default() -> None:
    shown = support.run_cli_here({}, "settings", "--markdown")
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout
    page = (ROOT / "docs" / "settings.md").read_text()
    assert table in page, "docs/settings.md's table is stale: paste `issuer settings --markdown` into it"
    for spec in SPECS:
        assert f"`{spec.env}`" in page


def test_each_setting_is_declared_once_as_a_field() -> None:
    """The table, the parsers and the Settings object come from one declaration per field."""
    assert [spec.field for spec in SPECS] == list(Settings.__struct_fields__)
    assert all(spec.env == f"ISSUER_{spec.field.upper()}" and spec.doc for spec in SPECS)
    settings = load({})
    with pytest.raises(AttributeError):
        settings.url = "https://elsewhere.example"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"access_token_ttl": 5}, "ISSUER_ACCESS_TOKEN_TTL: Expected `int` >= 10"),
        ({"access_token_ttl": "300"}, "ISSUER_ACCESS_TOKEN_TTL: Expected `int`, got `str`"),
        ({"signing_alg": "HS256"}, "ISSUER_SIGNING_ALG"),
        ({"refresh_grace": 300, "refresh_idle_ttl": 300}, "ISSUER_REFRESH_GRACE must be shorter"),
    ],
)
def test_overrides_and_replace_are_checked_like_the_environment(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load({}, **overrides)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load({}).replace(**overrides)


def test_an_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="acces_token_ttl"):
        load({}, acces_token_ttl=60)


def test_the_default_audience_follows_the_issuer_url_however_it_is_set() -> None:
    assert load({"ISSUER_URL": "https://a.example"}).default_audience == "https://a.example"
    assert load({}, url="https://b.example").default_audience == "https://b.example"
    explicit = load({"ISSUER_DEFAULT_AUDIENCE": "api"}, url="https://b.example")
    assert explicit.default_audience == "api"


# ---------------------------------------------------------------- credentials are masked where shown

DB_PASSWORD = "Zq9xWv7Kp"  # characters that occur nowhere else in the output
REDIS_PASSWORD = "Hy4mNb8Tc"
QUERY_SECRET = "Lr6uDs3Fe"


def _windows(secret: str, size: int = 3) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(values)
    return env


@pytest.mark.parametrize(
    ("database_url", "redis_url", "shown"),
    [
        (
            f"postgresql://issuer:{DB_PASSWORD}@db.internal:5432/issuer?sslmode=require&password={QUERY_SECRET}",
            f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0",
            [
                "ISSUER_DATABASE_URL=postgresql://issuer:***@db.internal:5432/issuer?sslmode=require&password=***",
                "ISSUER_REDIS_URL=redis://:***@cache.internal:6379/0",
            ],
        ),
        (
            f"postgresql://issuer:{DB_PASSWORD[:4]}@/{DB_PASSWORD[4:]}@db.internal/issuer",  # raw @, /
            f"redis+sentinel://app:{REDIS_PASSWORD}@s1:26379,s2/main?sentinel_password={QUERY_SECRET}",
            [
                "ISSUER_DATABASE_URL=postgresql://issuer:***@db.internal/issuer",
                "ISSUER_REDIS_URL=redis+sentinel://app:***@s1:26379,s2/main?sentinel_password=***",
            ],
        ),
    ],
    ids=["userinfo and ?password=", "unencoded separators, sentinel password"],
)
def test_settings_mask_credentials(database_url: str, redis_url: str, shown: list[str]) -> None:
    """Issue 14, point 7: `issuer settings` shows database and Redis URLs without their passwords
    (and the --markdown table's defaults go through the same mask)."""
    env = _env(ISSUER_DATABASE_URL=database_url, ISSUER_REDIS_URL=redis_url)
    for args in (("settings",), ("settings", "--markdown")):
        result = support.run_cli_here(env, *args)
        assert result.returncode == 0, result.stderr
        for secret in (DB_PASSWORD, REDIS_PASSWORD, QUERY_SECRET):
            assert not any(w in result.stdout + result.stderr for w in _windows(secret)), args
        if args == ("settings",):
            assert all(line in result.stdout.splitlines() for line in shown), result.stdout


@pytest.mark.parametrize(
    "database_url",
    [
        f"mysql://issuer:{DB_PASSWORD}@db/issuer",  # unsupported scheme
        f"postgres:/issuer:{DB_PASSWORD}@db/issuer",  # a slash short
        f"{DB_PASSWORD}@db/issuer",  # no scheme at all
        f"postgresql://issuer:{DB_PASSWORD}@db:54x2/issuer",  # the port is not a number
        f"postgresql://issuer:{DB_PASSWORD}@[::1/issuer",  # an unclosed IPv6 literal
    ],
)
def test_a_bad_database_url_error_never_echoes_its_password(database_url: str) -> None:
    """Issue 14, point 7: the one-line error names the setting and shows no character run of the
    password, whatever is wrong with the URL (the old message echoed its first 20 characters)."""
    for run in (
        lambda env: support.run_cli_here(env, "settings"),
        lambda env: support.run_rotate_keys_here(env, "status"),
    ):
        result = run(_env(ISSUER_DATABASE_URL=database_url))
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "ISSUER_DATABASE_URL" in lines[0], result.stderr
        assert not any(w in result.stdout + result.stderr for w in _windows(DB_PASSWORD)), lines[0]


def test_a_bad_redis_url_error_never_echoes_its_password() -> None:
    with pytest.raises(SettingsError, match="ISSUER_REDIS_URL") as raised:
        load({"ISSUER_REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache:63x9/0"})
    assert not any(w in str(raised.value) for w in _windows(REDIS_PASSWORD))


# ---------------------------------------------------------------- ISSUER_URL: https, or loopback


@pytest.mark.parametrize(
    "url",
    ["http://issuer.example.com", "http://10.0.0.5:8000", "http://[2001:db8::1]:8000", "http://0.0.0.0"],
)
def test_insecure_issuer_url_refused_outside_loopback(url: str, tmp_path: Path) -> None:
    """Issue 14, point 9: `issuer serve` with an http ISSUER_URL on a host that is not loopback
    stops at once with one line naming the setting and the opt-out."""
    env = _env(
        ISSUER_URL=url,
        ISSUER_KEYS_DIR=str(tmp_path / "keys"),
        ISSUER_DATABASE_URL=f"sqlite:///{tmp_path}/i.db",
    )
    result = support.run_cli(env, "serve", "--port", str(support.free_port()), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("issuer: error: bad setting: ISSUER_URL="), result.stderr
    assert "ISSUER_ALLOW_INSECURE_URL=true" in lines[0] and "https" in lines[0]
    assert not (tmp_path / "i.db").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.8.9.10", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("https://issuer.example.com", False),
        ("https://127.0.0.1:8443", False),
    ],
)
def test_insecure_issuer_url_on_loopback_is_a_warning(url: str, warned: bool) -> None:
    warning = check_url(load({"ISSUER_URL": url}))
    assert (warning is not None and "is not https" in warning) is warned


def test_insecure_issuer_url_on_loopback_serves_and_warns(server: support.ServerProcess) -> None:
    """The test servers' own http://127.0.0.1:PORT keeps working; the log says it is not https."""
    assert server.url.startswith("http://127.0.0.1:")
    assert f"ISSUER_URL={server.url} is not https" in server.log()


def test_insecure_issuer_url_allowed_when_opted_out(server_env: dict[str, str], tmp_path: Path) -> None:
    env = {**server_env, "ISSUER_URL": "http://issuer.test.internal", "ISSUER_ALLOW_INSECURE_URL": "true"}
    with support.running_server(env, tmp_path / "server.log") as server:
        log = server.log()
    assert "ISSUER_URL=http://issuer.test.internal is http on a host that is not loopback" in log
