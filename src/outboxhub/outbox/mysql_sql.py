"""The MySQL/MariaDB outbox table: its DDL, the insert ``add`` runs, and ``ensure_schema`` on an
application's own connection (PyMySQL, mysqlclient, aiomysql, asyncmy).

No driver is imported here: the application's connection arrives already made, and every DB-API driver
for MySQL uses the ``%s`` placeholder. The drainer's store (``outboxhub.outbox.mysql``) uses asyncmy.

Column choices (see docs/outbox.md): ``payload`` and ``headers`` are ``LONGTEXT`` holding JSON verbatim
(MySQL's ``JSON`` type re-orders keys; MariaDB's is ``LONGTEXT`` anyway); the table's collation is
``utf8mb4_bin`` so record ids and keys compare exactly (a case-insensitive collation would make ``A`` and
``a`` one id, and an idempotent add would then drop the second record). Indexes are part of the one
``CREATE TABLE IF NOT EXISTS`` statement, because MySQL has no ``CREATE INDEX IF NOT EXISTS``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from outboxhub._targets import is_mysql_missing_table
from outboxhub.errors import OutboxError, StoreURLError
from outboxhub.outbox._sql import insert_values, split_table
from outboxhub.outbox.model import PreparedRecord
from outboxhub.store.base import mask_url

__all__ = [
    "MAX_KEY_LENGTH",
    "check_record",
    "connect_kwargs",
    "ensure_schema_mysql",
    "ensure_schema_mysql_async",
    "insert_mysql",
    "insert_mysql_async",
    "insert_statement",
    "mysql_ddl",
    "quote_table",
]

MAX_KEY_LENGTH = 512
"""Longest record key the MySQL outbox stores (``VARCHAR(512)``: it is indexed, and InnoDB caps an index
entry at 3072 bytes)."""

_SERVER_STATUS_IN_TRANS = 1
# "Table already exists" is a note the drivers log as a warning on every start; silence it for the DDL.
_QUIET = "SET @outboxhub_sql_notes = @@sql_notes, sql_notes = 0"
_LOUD = "SET sql_notes = @outboxhub_sql_notes"
_NOW_MS_SQL = "(CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED))"


def connect_kwargs(url: str) -> dict[str, Any]:
    """asyncmy ``connect`` arguments from ``mysql://user:password@host:port/database`` (no query)."""
    parts = urlsplit(url)
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise StoreURLError(f"outbox URL {mask_url(url)!r} must name one database: mysql://host/database")
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise StoreURLError(f"outbox URL {mask_url(url)!r}: {exc}") from exc
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": port,
        "user": unquote(parts.username) if parts.username else "root",
        "password": unquote(parts.password) if parts.password else "",
        "database": database,
    }


def quote_table(table: str) -> str:
    """``table`` (``name`` or ``database.name``) as a back-quoted identifier, after validation."""
    schema, name = split_table(table, allow_schema=True)
    return f"`{schema}`.`{name}`" if schema else f"`{name}`"


def mysql_ddl(table: str = "outbox") -> list[str]:
    """The statement ``ensure_schema`` runs, for teams that manage migrations themselves.

    Needs MySQL ≥ 8.0.16 or MariaDB ≥ 10.6 (expression defaults, enforced CHECK, ``SKIP LOCKED``). Only
    ``topic`` and ``payload`` are required for an insert from plain SQL: ``id`` defaults to ``UUID()``,
    ``ts`` and ``available_at`` to now in milliseconds.
    """
    _, name = split_table(table, allow_schema=True)
    q = quote_table(table)
    return [
        f"""CREATE TABLE IF NOT EXISTS {q} (
    seq          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    id           VARCHAR(256) NOT NULL DEFAULT (UUID()),
    topic        TEXT         NOT NULL,
    payload      LONGTEXT     NOT NULL DEFAULT ('null'),
    `key`        VARCHAR({MAX_KEY_LENGTH}),
    headers      LONGTEXT,
    status       VARCHAR(8)   NOT NULL DEFAULT 'pending',
    ts           BIGINT       NOT NULL DEFAULT {_NOW_MS_SQL},
    available_at BIGINT       NOT NULL DEFAULT {_NOW_MS_SQL},
    attempts     INT          NOT NULL DEFAULT 0,
    claimed_by   TEXT,
    claim_token  VARCHAR(64),
    lease_until  BIGINT,
    last_err     MEDIUMTEXT,
    sent_at      BIGINT,
    UNIQUE KEY `{name}_id` (id),
    KEY `{name}_st_seq` (status, seq),
    KEY `{name}_st_lease` (status, lease_until),
    KEY `{name}_st_sent` (status, sent_at),
    KEY `{name}_key_st` (`key`, status, seq),
    CONSTRAINT `{name}_status_ck` CHECK (status IN ('pending', 'claimed', 'sent', 'dead'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]


def insert_statement(table: str, *, paramstyle: str = "format") -> str:
    """The idempotent insert ``add`` runs: ``%s`` placeholders (every MySQL DB-API driver; parameters
    ``_sql.insert_values``), or ``:name`` for SQLAlchemy ``text()``. An existing id leaves its row as
    it is."""
    q = quote_table(table)
    values = (
        "%s, %s, %s, %s, %s, %s, %s"
        if paramstyle == "format"
        else ":id, :topic, :payload, :key, :headers, :ts, :ts"
    )
    return (
        f"INSERT INTO {q} (id, topic, payload, `key`, headers, ts, available_at) "
        f"VALUES ({values}) ON DUPLICATE KEY UPDATE id = id"
    )


def check_record(record: PreparedRecord) -> None:
    """``OutboxError`` when the record does not fit the MySQL table (strict mode would refuse it later)."""
    if record.key is not None and len(record.key) > MAX_KEY_LENGTH:
        raise OutboxError(
            f"outbox record refused: key is {len(record.key)} characters long; "
            f"the MySQL outbox stores keys of at most {MAX_KEY_LENGTH}"
        )


def missing_table_error(table: str) -> OutboxError:
    return OutboxError(
        f"outbox table {table!r} does not exist; create it with ensure_schema() or the DDL in docs/outbox.md"
    )


def insert_mysql(conn: Any, record: PreparedRecord, table: str) -> None:
    """Insert ``record`` with a PyMySQL or mysqlclient connection, in the caller's transaction (never
    commits)."""
    check_record(record)
    cur = conn.cursor()
    try:
        cur.execute(insert_statement(table), insert_values(record))
    except Exception as exc:
        if is_mysql_missing_table(exc):
            raise missing_table_error(table) from exc
        raise
    finally:
        cur.close()


async def insert_mysql_async(conn: Any, record: PreparedRecord, table: str) -> None:
    """Insert ``record`` with an aiomysql or asyncmy connection, in the caller's transaction."""
    check_record(record)
    try:
        async with conn.cursor() as cur:
            await cur.execute(insert_statement(table), insert_values(record))
    except Exception as exc:
        if is_mysql_missing_table(exc):
            raise missing_table_error(table) from exc
        raise


def _refuse_open_transaction(conn: Any) -> None:
    # CREATE TABLE commits implicitly in MySQL: run inside the caller's transaction it would commit the
    # caller's work. PyMySQL, aiomysql and asyncmy keep the server's status flags of the last reply.
    status = getattr(conn, "server_status", 0)
    if isinstance(status, int) and status & _SERVER_STATUS_IN_TRANS:
        raise OutboxError("ensure_schema: the connection has an open transaction; commit or roll back first")


def ensure_schema_mysql(conn: Any, table: str = "outbox") -> None:
    """Create the outbox table on a PyMySQL or mysqlclient connection (DDL commits implicitly)."""
    statements = mysql_ddl(table)
    _refuse_open_transaction(conn)
    cur = conn.cursor()
    try:
        cur.execute(_QUIET)
        try:
            for statement in statements:
                cur.execute(statement)
        finally:
            cur.execute(_LOUD)
    finally:
        cur.close()


async def ensure_schema_mysql_async(conn: Any, table: str = "outbox") -> None:
    """``ensure_schema_mysql`` for an aiomysql or asyncmy connection."""
    statements = mysql_ddl(table)
    _refuse_open_transaction(conn)
    async with conn.cursor() as cur:
        await cur.execute(_QUIET)
        try:
            for statement in statements:
                await cur.execute(statement)
        finally:
            await cur.execute(_LOUD)
