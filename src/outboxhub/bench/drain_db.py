"""The outbox databases of ``outboxhub bench drainers``: one fresh outbox per run, filled before the clock
starts, dropped afterwards — an SQLite file (WAL), a throwaway schema of the PostgreSQL server, or a
throwaway database of the MySQL/MariaDB or MongoDB server."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from outboxhub import outbox
from outboxhub.urls import join_url

__all__ = ["PAYLOAD", "Kind", "OutboxDb", "new_db", "quoted", "remove_sqlite"]

Kind = Literal["sqlite", "postgres", "mongo", "mysql"]
PAYLOAD: Final = {"order": 0, "note": "x" * 64}  # ~100 bytes of JSON


def quoted(table: str) -> str:
    """``schema.table`` quoted for SQL (the bench's own names: letters, digits and ``_``)."""
    return ".".join(f'"{part}"' for part in table.split("."))


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class OutboxDb:
    """An outbox database for one run (create with :func:`new_db`): ``url`` opens it with
    ``open_outbox``; ``table`` is its table (or collection)."""

    def __init__(
        self,
        kind: Kind,
        workdir: Path,
        *,
        pg_url: str | None,
        mongo_url: str | None,
        mysql_url: str | None = None,
    ) -> None:
        self.kind = kind
        self.pg_url = pg_url or ""
        self.mysql_url = ""
        self.table = "outbox"
        self.path = workdir / f"outbox-{uuid.uuid4().hex[:8]}.db"
        self.database = f"bench_{uuid.uuid4().hex[:12]}"  # MongoDB database or PostgreSQL schema
        if kind == "mongo":
            import pymongo

            assert mongo_url is not None
            self.mongo: Any = pymongo.MongoClient(mongo_url)
            self.url = join_url(urlsplit(mongo_url)._replace(path=f"/{self.database}"))
        elif kind == "mysql":
            from outboxhub.testing.mysql import connect, database_url

            assert mysql_url is not None
            with connect(mysql_url, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            self.mysql_url = database_url(mysql_url, self.database)
            self.url = f"{self.mysql_url}?table={self.table}"
            outbox.ensure_schema(self.url)
        elif kind == "sqlite":
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            outbox.ensure_schema(conn)
            conn.close()
            self.url = f"sqlite:///{self.path}"
        else:
            import psycopg

            with psycopg.connect(self.pg_url, autocommit=True) as pg:
                pg.execute(f'CREATE SCHEMA "{self.database}"')
                outbox.ensure_schema(pg, f"{self.database}.outbox")
            self.table = f"{self.database}.outbox"
            self.url = f"{self.pg_url}?table={self.table}"

    def fill(self, n: int) -> None:
        """Add ``n`` records (keys ``o0``..``o999``), as committed application writes."""
        rows = [
            outbox.prepare_record("bench.orders.created", {**PAYLOAD, "order": i}, key=f"o{i % 1000}")
            for i in range(n)
        ]
        if self.kind == "mongo":
            from outboxhub.outbox.mongo import record_doc

            collection = self.mongo[self.database][self.table]
            for start in range(0, n, 1000):
                collection.insert_many([{"_id": r.id, **record_doc(r)} for r in rows[start : start + 1000]])
            return
        params = [(r.id, r.topic, r.payload_json, r.key, r.headers_json, r.ts, r.ts) for r in rows]
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            with conn:
                conn.executemany(outbox.sqlite.insert_statement(self.table, paramstyle="qmark"), params)
            conn.close()
        elif self.kind == "mysql":
            from outboxhub.outbox.mysql_sql import insert_statement
            from outboxhub.testing.mysql import connect

            with connect(self.mysql_url) as my, my.cursor() as cur:
                for start in range(0, n, 1000):
                    cur.executemany(insert_statement(self.table), params[start : start + 1000])
                    my.commit()
        else:
            import psycopg

            with psycopg.connect(self.pg_url) as pg, pg.cursor() as cur:
                cur.executemany(outbox.postgres.insert_statement(self.table, paramstyle="format"), params)

    def drop(self) -> None:
        if self.kind == "mongo":
            self.mongo.drop_database(self.database)
            self.mongo.close()
        elif self.kind == "sqlite":
            remove_sqlite(self.path)
        elif self.kind == "mysql":
            from outboxhub.testing.mysql import connect

            with connect(self.mysql_url, autocommit=True) as my, my.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        else:
            import psycopg

            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.database}" CASCADE')

    def count_unsent(self) -> int:
        if self.kind == "mongo":
            return int(self.mongo[self.database][self.table].count_documents({"status": {"$ne": "sent"}}))
        sql = f"SELECT count(*) FROM {quoted(self.table)} WHERE status <> 'sent'"
        if self.kind == "mysql":
            from outboxhub.testing.mysql import connect

            with connect(self.mysql_url) as my, my.cursor() as cur:
                cur.execute(sql.replace('"', "`"))
                return int(cur.fetchone()[0])
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            (n,) = conn.execute(sql).fetchone()
            conn.close()
            return int(n)
        import psycopg

        with psycopg.connect(self.pg_url) as pg:
            row = pg.execute(sql).fetchone()
            assert row is not None
            return int(row[0])


async def new_db(
    kind: Kind, workdir: Path, *, pg_url: str | None, mongo_url: str | None, mysql_url: str | None = None
) -> OutboxDb:
    """A fresh, empty outbox; on MongoDB with ``ensure_schema``'s indexes."""
    db = await asyncio.to_thread(
        OutboxDb, kind, workdir, pg_url=pg_url, mongo_url=mongo_url, mysql_url=mysql_url
    )
    if kind == "mongo":
        await outbox.ensure_schema_async(db.url)
    return db
