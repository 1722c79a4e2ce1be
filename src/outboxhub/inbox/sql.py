"""The inbox table on SQL databases: its DDL, the statements, and checking what callers pass in.

One row per processed delivery, keyed by ``(consumer_group, topic, event_id)`` (event ids are unique per
topic, not across topics). ``processed_at`` (epoch milliseconds) is what retention cleanup goes by.
The same SQL runs on SQLite (3.24 or newer, for ``ON CONFLICT``) and PostgreSQL; only the placeholders
differ. Nothing here imports a database driver.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from outboxhub.errors import InboxError, TopicError
from outboxhub.topics import validate_group, validate_topic

__all__ = [
    "DEFAULT_TABLE",
    "MAX_EVENT_ID_LENGTH",
    "Paramstyle",
    "check_key",
    "check_table",
    "claim_statement",
    "cleanup_statement",
    "postgres_ddl",
    "sqlite_ddl",
]

DEFAULT_TABLE: Final = "inbox"
MAX_EVENT_ID_LENGTH: Final = 256
"""The wire protocol's limit on event ids."""

Paramstyle = Literal["qmark", "format", "named"]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def check_table(table: object, *, allow_schema: bool) -> str:
    """``table`` if it is a (``schema.``)``name`` of plain identifiers, else ``InboxError`` naming it.

    Table names are put into SQL text, so only letters, digits and underscores are accepted."""
    if not isinstance(table, str):
        raise InboxError(f"inbox table must be a string, got {type(table).__name__}")
    parts = table.split(".")
    if len(parts) > (2 if allow_schema else 1) or not all(_IDENT.fullmatch(p) for p in parts):
        shape = "name or schema.name" if allow_schema else "name"
        raise InboxError(
            f"inbox table {table!r:.80} must be a {shape} of letters, digits and underscores "
            "(not starting with a digit, at most 48 characters each)"
        )
    return table


def check_key(group: object, topic: object, event_id: object) -> None:
    """Raise ``InboxError`` naming the first of ``group``, ``topic``, ``event_id`` that is invalid."""
    try:
        validate_group(group)  # type: ignore[arg-type]  # checked at run time: it names a non-string
        validate_topic(topic)  # type: ignore[arg-type]
    except TopicError as exc:
        raise InboxError(f"inbox: {exc}") from exc
    except TypeError as exc:  # pragma: no cover - validate_* raise TopicError for non-strings
        raise InboxError(f"inbox: {exc}") from exc
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH:
        raise InboxError(
            f"inbox: event id must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters, "
            f"got {event_id!r:.80}"
        )


def _index_name(table: str) -> str:
    return table.rpartition(".")[2] + "_processed_at"


def sqlite_ddl(table: str = DEFAULT_TABLE) -> list[str]:
    """The statements that create the inbox table and its retention index on SQLite."""
    check_table(table, allow_schema=False)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " consumer_group TEXT NOT NULL,"
        " topic TEXT NOT NULL,"
        " event_id TEXT NOT NULL,"
        " processed_at INTEGER NOT NULL,"
        " PRIMARY KEY (consumer_group, topic, event_id)"
        ") WITHOUT ROWID",
        f"CREATE INDEX IF NOT EXISTS {_index_name(table)} ON {table} (processed_at)",
    ]


def postgres_ddl(table: str = DEFAULT_TABLE) -> list[str]:
    """The statements that create the inbox table and its retention index on PostgreSQL."""
    check_table(table, allow_schema=True)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " consumer_group TEXT NOT NULL,"
        " topic TEXT NOT NULL,"
        " event_id TEXT NOT NULL,"
        " processed_at BIGINT NOT NULL,"
        " PRIMARY KEY (consumer_group, topic, event_id)"
        ")",
        f"CREATE INDEX IF NOT EXISTS {_index_name(table)} ON {table} (processed_at)",
    ]


def _marks(paramstyle: Paramstyle, names: tuple[str, ...]) -> list[str]:
    if paramstyle == "qmark":
        return ["?"] * len(names)
    if paramstyle == "format":
        return ["%s"] * len(names)
    return [f":{name}" for name in names]


def claim_statement(table: str, paramstyle: Paramstyle) -> str:
    """``INSERT … ON CONFLICT DO NOTHING`` of one row: it changes one row if the delivery is new, none if
    it was recorded before. Parameters: group, topic, event_id, processed_at."""
    g, t, e, p = _marks(paramstyle, ("group", "topic", "event_id", "processed_at"))
    return (
        f"INSERT INTO {table} (consumer_group, topic, event_id, processed_at) VALUES ({g}, {t}, {e}, {p}) "
        "ON CONFLICT (consumer_group, topic, event_id) DO NOTHING"
    )


def cleanup_statement(table: str, paramstyle: Paramstyle) -> str:
    """Delete the rows processed before a cutoff (parameter: cutoff, epoch ms)."""
    (c,) = _marks(paramstyle, ("cutoff",))
    return f"DELETE FROM {table} WHERE processed_at < {c}"
