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
    limits = (settings.max_header_bytes, settings.max_header_fields, settings.header_timeout)
    assert limits == (16384, 100, 10)
    assert (settings.body_timeout, settings.max_connections) == (30, 1000)


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


def test_the_readme_lists_every_setting_with_its_default() -> None:
    table = subprocess.run(
        [str(ROOT / ".venv/bin/issuer"), "settings", "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README settings table is stale: paste `issuer settings --markdown` into it"
    for spec in SPECS:
        assert f"`{spec.env}`" in readme
