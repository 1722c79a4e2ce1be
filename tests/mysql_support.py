"""The MySQL/MariaDB outbox database of the tests (no tests here): ``mysql_db()`` yields a ``MysqlOutboxDB``
on a throwaway database of the test server (``OUTBOXHUB_TEST_MYSQL_URL``, default
``mysql://root@127.0.0.1:3306/test``) with the outbox table, dropped afterwards. An unreachable server skips
the test, or fails it under ``CI=true`` (tests/conftest.py).

``MysqlOutboxDB`` is reached as an application does (PyMySQL, not autocommit, ``outbox.add``) and as a
drainer does (``url``); it offers what the outbox contract (tests/test_outbox_store.py) and the crash tests
need: ``add_many``, ``status_counts``, ``query``/``count``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from outboxhub import outbox
from outboxhub.outbox.mysql_sql import quote_table
from outboxhub.testing.mysql import connect, throwaway_database

__all__ = ["MysqlOutboxDB", "mysql_db"]


class MysqlOutboxDB:
    """An outbox table in a MySQL/MariaDB database."""

    kind = "mysql"

    def __init__(self, dsn: str, table: str = "outbox") -> None:
        self.dsn = dsn
        self.table = table
        self.url = f"{dsn}?table={table}"

    def connect(self) -> Any:
        """A new application connection (PyMySQL, not autocommit)."""
        return connect(self.dsn)

    def add_many(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """``outbox.add`` each record (keyword arguments of add) in one committed transaction."""
        conn = self.connect()
        try:
            ids = [
                outbox.add(
                    conn,
                    r["topic"],
                    r.get("payload"),
                    **{k: v for k, v in r.items() if k in ("id", "key", "headers")},
                    table=self.table,
                )
                for r in records
            ]
            conn.commit()
        finally:
            conn.close()
        return ids

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``{t}`` is the quoted table, ``%s`` placeholders) and return the rows."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.replace("{t}", quote_table(self.table)), params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def count(self, where: str = "TRUE", params: Sequence[Any] = ()) -> int:
        return int(self.query(f"SELECT count(*) FROM {{t}} WHERE {where}", params)[0][0])

    def status_counts(self) -> Counter[str]:
        """How many records the table holds in each status."""
        return Counter(
            {str(s): int(n) for s, n in self.query("SELECT status, count(*) FROM {t} GROUP BY status")}
        )


@contextmanager
def mysql_db(prefix: str = "obx") -> Iterator[MysqlOutboxDB]:
    """An outbox table in a fresh database of the test server; the database is dropped afterwards."""
    with throwaway_database(prefix) as url:
        db = MysqlOutboxDB(url)
        outbox.ensure_schema(db.url)
        yield db
