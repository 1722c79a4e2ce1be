"""``outboxhub.contrib.django`` on Django's SQLite, PostgreSQL and MySQL (MariaDB) backends: the app's
migration creates a table outboxhub's drainers read by URL, ``outbox.add`` follows ``transaction.atomic()``
(committed records are published once, in key order; rolled-back ones never), and refuses to run outside
one. Django is configured once for this process, with one database alias per backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

django = pytest.importorskip("django", reason="the 'django' extra is not installed")

from django.conf import settings  # noqa: E402

from outboxhub import outbox as core  # noqa: E402
from outboxhub.errors import OutboxError  # noqa: E402
from outboxhub.outbox import Drainer, DrainerSettings  # noqa: E402
from outboxhub.outbox._sql import COLUMNS  # noqa: E402
from outboxhub.testing.mysql import base_url as mysql_base_url  # noqa: E402
from outboxhub.testing.mysql import connect as mysql_connect  # noqa: E402
from outboxhub.testing.mysql import connect_kwargs, require_mysql  # noqa: E402
from outboxhub.testing.postgres import base_url as pg_base_url  # noqa: E402
from test_outbox_support import RecordingSink, assert_key_order  # noqa: E402

_RUN = uuid.uuid4().hex[:12]
_PG_SCHEMA = f"dj_{_RUN}"
_MYSQL_DB = f"dj_{_RUN}"
_SQLITE = Path(f"/tmp/outboxhub-django-{_RUN}.sqlite3")


def _configure() -> None:
    if settings.configured:
        return
    from urllib.parse import urlsplit

    pg = urlsplit(pg_base_url())
    my = connect_kwargs(mysql_base_url())
    settings.configure(
        SECRET_KEY="outboxhub-tests",
        USE_TZ=True,
        INSTALLED_APPS=["outboxhub.contrib.django"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_SQLITE)},
            "postgres": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": pg.path.lstrip("/"),
                "USER": pg.username or "",
                "PASSWORD": pg.password or "",
                "HOST": pg.hostname or "127.0.0.1",
                "PORT": str(pg.port or 5432),
                "OPTIONS": {"options": f"-c search_path={_PG_SCHEMA}"},
            },
            "mysql": {
                "ENGINE": "django.db.backends.mysql",
                "NAME": _MYSQL_DB,
                "USER": my["user"],
                "PASSWORD": my["password"],
                "HOST": my["host"],
                "PORT": str(my["port"]),
                "OPTIONS": {"charset": "utf8mb4"},
            },
        },
    )
    import pymysql

    pymysql.install_as_MySQLdb()  # Django's MySQL backend imports MySQLdb; PyMySQL stands in for it
    pymysql.version_info = (2, 2, 1, "final", 0)  # Django checks the mysqlclient version it expects
    django.setup()


def _prepare(alias: str) -> str:
    """Create the alias's database or schema, migrate it; return the drainer's outbox URL."""
    from django.core.management import call_command

    from outboxhub.contrib.django import outbox_url

    table = "outboxhub_outbox"
    if alias == "postgres":
        import psycopg

        from outboxhub.testing import unavailable

        try:
            with psycopg.connect(pg_base_url(), autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{_PG_SCHEMA}"')
        except psycopg.OperationalError as exc:
            unavailable(
                f"PostgreSQL test server is unreachable ({exc}); start it or set OUTBOXHUB_TEST_PG_URL"
            )
        table = f"{_PG_SCHEMA}.outboxhub_outbox"
    elif alias == "mysql":
        with mysql_connect(require_mysql(), autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{_MYSQL_DB}`")
    call_command("migrate", database=alias, verbosity=0)
    return outbox_url(alias, table=table)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _SQLITE.unlink(missing_ok=True)
    if not settings.configured:
        return
    from django.db import connections

    connections.close_all()
    try:
        import psycopg

        with psycopg.connect(pg_base_url(), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{_PG_SCHEMA}" CASCADE')
    except Exception:  # best effort: the server may be the one missing
        pass
    try:
        with mysql_connect(mysql_base_url(), autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{_MYSQL_DB}`")
    except Exception:
        pass


@pytest.fixture(
    params=[
        "default",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
    ids=["sqlite", "postgres", "mysql"],
)
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    _configure()
    alias: str = request.param
    url = _prepare(alias)
    yield alias, url
    from outboxhub.contrib.django import OutboxEntry

    OutboxEntry.objects.using(alias).all().delete()


class _Boom(Exception):
    pass


def _add_in_transactions(alias: str) -> tuple[list[str], int]:
    """Commit 30 records (keys k0..k2) in three transactions, and roll back a fourth; return the ids."""
    from django.db import transaction

    from outboxhub.contrib.django import outbox

    ids: list[str] = []
    for t in range(3):
        with transaction.atomic(using=alias):
            ids += [
                outbox.add("orders.paid", {"n": t * 10 + i}, key=f"k{i % 3}", using=alias) for i in range(10)
            ]
    with pytest.raises(_Boom), transaction.atomic(using=alias):
        outbox.add("orders.rolled_back", {"n": 99}, key="k0", using=alias)
        raise _Boom
    return ids, 30


async def test_committed_records_are_drained_once_in_key_order_rolled_back_ones_never(
    backend: tuple[str, str],
) -> None:
    from asgiref.sync import sync_to_async

    alias, url = backend
    ids, _ = await sync_to_async(_add_in_transactions)(alias)
    store = await core.open_outbox(url)
    try:
        await store.ensure_schema()  # run_drainers does this; harmless on the migrated table
        sink = RecordingSink()
        drainer = Drainer(store, sink, DrainerSettings(batch_size=7, ordered_by_key=True, idle_wait_ms=20))
        await drainer.run_until_idle()
        stats = await store.stats()
    finally:
        await store.close()
    assert sink.ids == ids  # no rolled-back record, each committed one once, in order
    assert set(sink.calls.values()) == {1}
    assert_key_order(sink.log)
    assert (stats.pending, stats.claimed, stats.dead) == (0, 0, 0)


def test_add_outside_an_atomic_block_is_refused(backend: tuple[str, str]) -> None:
    from outboxhub.contrib.django import OutboxEntry, outbox

    alias, _ = backend
    with pytest.raises(OutboxError, match=r"inside transaction\.atomic\(using="):
        outbox.add("orders.paid", {"n": 1}, using=alias)
    assert OutboxEntry.objects.using(alias).count() == 0


def test_add_checks_the_record_and_is_idempotent(backend: tuple[str, str]) -> None:
    from django.db import transaction

    from outboxhub.contrib.django import OutboxEntry, outbox

    alias, _ = backend
    with transaction.atomic(using=alias):
        with pytest.raises(OutboxError, match="payload is not JSON-serialisable"):
            outbox.add("orders.paid", object(), using=alias)
        with pytest.raises(OutboxError, match="topic"):
            outbox.add("bad..topic", 1, using=alias)
        first = outbox.add("orders.paid", {"v": 1}, id="Order-1", using=alias)
        outbox.add("orders.paid", {"v": 2}, id="Order-1", using=alias)  # idempotent: unchanged
        outbox.add("orders.paid", {"v": 3}, id="order-1", using=alias)  # ids compare exactly
    rows = sorted(OutboxEntry.objects.using(alias).values_list("record_id", "payload"))
    assert rows == [(first, '{"v":1}'), ("order-1", '{"v":3}')]


def test_the_migrated_table_has_the_documented_columns(backend: tuple[str, str]) -> None:
    from django.db import connections

    alias, _ = backend
    connection = connections[alias]
    with connection.cursor() as cursor:
        columns = [c.name for c in connection.introspection.get_table_description(cursor, "outboxhub_outbox")]
    assert sorted(columns) == sorted(c.strip() for c in COLUMNS.split(","))
