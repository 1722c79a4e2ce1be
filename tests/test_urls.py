"""Issue #14 item 14: one masking function for every URL the hub shows."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.outbox.url import parse_outbox_url
from outboxhub.store.base import mask_url as store_mask_url
from outboxhub.store.postgres.conn import parse_url
from outboxhub.urls import is_secret_key, join_url, mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///data/hub.db", "sqlite:///data/hub.db"),
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        (
            "postgresql://db/app?sslmode=require&password=s3cret",
            "postgresql://db/app?sslmode=require&password=***",
        ),
        (
            "mongodb://u:p@h/db?authSource=admin&replicaSet=rs0",
            "mongodb://u:***@h/db?authSource=***&replicaSet=rs0",
        ),
        ("https://idp/jwks.json?token=abc&x=1", "https://idp/jwks.json?token=***&x=1"),
        (
            "https://idp/jwks.json?api_key=abc&X-Amz-Signature=d",
            "https://idp/jwks.json?api_key=***&X-Amz-Signature=***",
        ),
        ("sqlite:///a.db?secret=x", "sqlite:///a.db?secret=***"),
        ("postgresql://u@db/app?sslkey=/k", "postgresql://u@db/app?sslkey=***"),
        ("host=db password=abc user=u", "host=db password=*** user=u"),
        ("https://h/p#access_token=abc", "https://h/p#***"),
    ],
)
def test_credentials_are_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert store_mask_url is mask_url  # one function, wherever it is imported from


@given(
    st.sampled_from(["password", "token", "secret", "authSource", "sslpassword", "access_token", "apikey"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20),
    st.sampled_from(["postgresql://db/app", "mongodb://h/db", "https://idp/jwks", "sqlite:///x.db"]),
)
def test_no_credential_value_survives(key: str, value: str, base: str) -> None:
    assert is_secret_key(key)
    shown = mask_url(f"{base}?{key}={value}&user:{value}=1")
    assert f"={value}" not in shown


@given(st.text(alphabet="abc:@/?=&#%.", max_size=30))
def test_masking_never_raises(text: str) -> None:
    assert isinstance(mask_url(text), str)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///app?host=%2Fvar%2Frun%2Fpostgresql",
        "postgresql://?host=%2Ftmp&dbname=app",
        "postgresql://u:p@db:5432/app?sslmode=require",
        "mysql:///app?unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock",
        "mongodb://h1,h2/db?replicaSet=rs0",
        "sqlite:///data/hub.db",
        "https://idp/jwks.json#frag",
    ],
)
def test_join_url_gives_back_the_url_it_was_split_from(url: str) -> None:
    assert join_url(urlsplit(url)) == url


def test_a_postgresql_url_without_a_host_keeps_it_for_the_unix_socket() -> None:
    settings = parse_url("postgresql:///app?host=/var/run/postgresql&schema=hub")
    assert settings.dsn == "postgresql:///app?host=%2Fvar%2Frun%2Fpostgresql"
    assert settings.schema == "hub"
    outbox = parse_outbox_url("postgres:///app?host=/var/run/postgresql&table=s.outbox")
    assert (outbox.target, outbox.table) == ("postgresql:///app?host=%2Fvar%2Frun%2Fpostgresql", "s.outbox")
