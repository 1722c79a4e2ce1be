"""For tests and benchmarks (not the hub): the MySQL/MariaDB test server and a throwaway database on it.

The server is ``OUTBOXHUB_TEST_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306/test``). When it cannot
be reached, :func:`require_mysql` calls :func:`outboxhub.testing.unavailable` with a message naming it:
``ServiceUnavailable`` by default; under pytest, ``tests/conftest.py`` turns that into a skip (a failure
under ``CI=true``). Needs the ``mysql`` extra (PyMySQL).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pymysql

from outboxhub.outbox.mysql_sql import connect_kwargs
from outboxhub.store.base import mask_url
from outboxhub.testing import unavailable
from outboxhub.urls import join_url

__all__ = ["base_url", "connect", "database_url", "require_mysql", "throwaway_database"]

DEFAULT_TEST_URL = "mysql://root@127.0.0.1:3306/test"

_problems: dict[str, str | None] = {}


def base_url() -> str:
    """The test server's URL (its database is only used to connect)."""
    return os.environ.get("OUTBOXHUB_TEST_MYSQL_URL") or DEFAULT_TEST_URL


def database_url(url: str, database: str) -> str:
    """``url`` naming ``database`` instead of its own."""
    return join_url(urlsplit(url)._replace(path=f"/{database}", query=""))


def connect(url: str, **options: Any) -> Any:
    """A PyMySQL connection to ``url`` (utf8mb4; ``options`` go to ``pymysql.connect``)."""
    return pymysql.connect(**connect_kwargs(url), charset="utf8mb4", **options)


def _problem(url: str) -> str | None:
    if url not in _problems:
        try:
            connect(url, connect_timeout=3).close()
        except pymysql.Error as exc:
            _problems[url] = (
                f"MySQL/MariaDB test server {mask_url(url)} is unreachable ({exc}); start it or set "
                "OUTBOXHUB_TEST_MYSQL_URL"
            )
        else:
            _problems[url] = None
    return _problems[url]


def require_mysql() -> str:
    """The test server's URL; :func:`~outboxhub.testing.unavailable` when it cannot be reached."""
    url = base_url()
    problem = _problem(url)
    if problem is not None:
        unavailable(problem)
    return url


@contextmanager
def throwaway_database(prefix: str = "t") -> Iterator[str]:
    """Yield the URL of a fresh database on the test server; drop it afterwards."""
    url = require_mysql()
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield database_url(url, name)
    finally:
        with connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
