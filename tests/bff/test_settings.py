"""``BFF_*`` settings: validated at start, each error one line naming the variable."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from issuer.bff.sessions import load_session_key
from issuer.bff.settings import Upstream, load
from issuer.keys.material import b64encode
from issuer.settings import SettingsError

BASE = {
    "BFF_URL": "https://app.example",
    "BFF_ISSUER_URL": "https://auth.example",
    "BFF_CLIENT_ID": "cl_bff",
    "BFF_CLIENT_SECRET": "s3cret-value",
}


def test_the_minimum() -> None:
    settings = load(BASE)
    assert settings.url == "https://app.example" and settings.scope == "openid"
    assert settings.upstreams == () and settings.database_url == "sqlite:///bff.db"


def test_required_variables_are_named() -> None:
    with pytest.raises(
        SettingsError, match=r"^BFF_URL, BFF_ISSUER_URL, BFF_CLIENT_ID, BFF_CLIENT_SECRET are required$"
    ):
        load({})


def test_upstreams_are_parsed() -> None:
    settings = load(
        {**BASE, "BFF_UPSTREAMS": "/api=http://127.0.0.1:9000/, /files/v1=https://f.example/base"}
    )
    assert settings.upstreams == (
        Upstream("/api", "http://127.0.0.1:9000"),
        Upstream("/files/v1", "https://f.example/base"),
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BFF_URL": "http://app.example"}, "BFF_URL='http://app.example' must be https"),
        ({"BFF_URL": "https://app.example/"}, "BFF_URL=.* must not end with a slash"),
        ({"BFF_ISSUER_URL": "ftp://auth.example"}, "BFF_ISSUER_URL=.* must be an http"),
        ({"BFF_UPSTREAMS": "api=http://x"}, "BFF_UPSTREAMS: 'api=http://x' is not PREFIX=URL"),
        ({"BFF_UPSTREAMS": "/bff=http://x"}, "the BFF's own"),
        ({"BFF_UPSTREAMS": "/bff/x=http://x"}, "the BFF's own"),
        ({"BFF_UPSTREAMS": "/a/../b=http://x"}, "dot segment"),
        ({"BFF_UPSTREAMS": "/api=http://u:pw@x"}, "must not hold credentials"),
        ({"BFF_UPSTREAMS": "/api=http://x,/api=http://y"}, "listed twice"),
        ({"BFF_UPSTREAMS": "/api=javascript:alert(1)"}, "is not an http"),
        ({"BFF_SESSION_IDLE_TTL": "10"}, r"BFF_SESSION_IDLE_TTL=10 is out of range"),
        ({"BFF_SESSION_IDLE_TTL": "31536000"}, "must not exceed BFF_SESSION_ABSOLUTE_TTL"),
        ({"BFF_SESSION_KEY": "c2hvcnQ"}, "BFF_SESSION_KEY must decode to 32 bytes"),
        ({"BFF_REDIS_URL": "redis://127.0.0.1:6379/0"}, "BFF_SESSION_KEY is required"),
        ({"BFF_DATABASE_URL": "postgresql://u@h/db"}, "BFF_SESSION_KEY is required"),
        ({"BFF_DATABASE_URL": "mysql://u:pw@h/db"}, "BFF_DATABASE_URL must start with"),
        ({"BFF_SCOPE": "read"}, "BFF_SCOPE must include openid"),
        ({"BFF_STATIC_DIR": "/nonexistent/dir"}, "BFF_STATIC_DIR=.* is not a directory"),
    ],
)
def test_bad_values_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load({**BASE, **env})
    assert "\n" not in str(caught.value)
    assert "pw" not in str(caught.value) and "s3cret" not in str(caught.value)


def test_the_embedded_key_file_is_generated_owner_only(tmp_path: Path) -> None:
    settings = load({**BASE, "BFF_KEYS_DIR": str(tmp_path / "keys")})
    key = load_session_key(settings)
    assert len(key) == 32 and load_session_key(settings) == key  # made once, then read
    path = tmp_path / "keys" / "bff_session_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_environment_key_wins(tmp_path: Path) -> None:
    raw = secrets.token_bytes(32)
    settings = load({**BASE, "BFF_SESSION_KEY": b64encode(raw), "BFF_KEYS_DIR": str(tmp_path / "keys")})
    assert load_session_key(settings) == raw and not (tmp_path / "keys").exists()


def test_docs_bff_lists_every_setting() -> None:
    from issuer.bff.settings import SPECS, markdown_table

    page = (Path(__file__).resolve().parents[2] / "docs" / "bff.md").read_text()
    assert markdown_table() in page, "docs/bff.md's table is stale: paste `issuer bff settings --markdown`"
    for spec in SPECS:
        assert f"`{spec.env}`" in page
