"""Settings are validated at start with a message that names the variable; the README lists them all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from issuer.settings import SPECS, SettingsError, load

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    settings = load({})
    assert settings.url == "http://127.0.0.1:8000"
    assert settings.database_url == "sqlite:///issuer.db"
    assert settings.redis_url is None
    assert settings.signing_alg == "ES256"
    assert settings.access_token_ttl == 300
    assert settings.default_audience == settings.url
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
        ({"ISSUER_TRUSTED_PROXIES": "proxy.internal"}, "ISSUER_TRUSTED_PROXIES: 'proxy.internal' is not"),
        ({"ISSUER_TRUSTED_PROXIES": "10.0.0.5,10.1.2.3/16"}, "ISSUER_TRUSTED_PROXIES: '10.1.2.3/16'"),
        ({"ISSUER_TRUSTED_PROXIES": "*"}, "ISSUER_TRUSTED_PROXIES"),
        ({"ISSUER_RATE_LIMIT_PASSWORD_ADDRESS": "-1"}, "ISSUER_RATE_LIMIT_PASSWORD_ADDRESS"),
        ({"ISSUER_RATE_LIMIT_PASSWORD_GLOBAL": "many"}, "ISSUER_RATE_LIMIT_PASSWORD_GLOBAL"),
        ({"ISSUER_PASSWORD_HASH_QUEUE": "-1"}, "ISSUER_PASSWORD_HASH_QUEUE"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load(env)


def test_the_readme_lists_every_setting_with_its_default() -> None:
    table = subprocess.run(
        [str(ROOT / ".venv/bin/issuer"), "settings", "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README settings table is stale: paste `issuer settings --markdown` into it"
    for spec in SPECS:
        assert f"`{spec.env}`" in readme
