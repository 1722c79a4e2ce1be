"""The application's database handles that ``outbox.add`` and ``inbox.claim`` write with, in the caller's
transaction: which kind a handle is, whether it suits the call, its SQLAlchemy dialect, and whether a
driver error means the table is missing.

Drivers are only consulted when the application has imported them: an object of their types cannot exist
otherwise, and importing them here would slow every call down (they are optional extras).
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Collection
from typing import Any, Final, Literal

__all__ = [
    "ASYNC_KINDS",
    "MONGO_KINDS",
    "MYSQL_DRIVER_MODULES",
    "Kind",
    "check_kind",
    "classify",
    "is_missing_table",
    "is_mysql_missing_table",
    "mysql_kind",
    "sa_dialect",
]

Kind = Literal[
    "sqlite", "psycopg", "psycopg_async", "mysql", "mysql_async", "sa", "sa_async", "mongo", "mongo_async"
]
ASYNC_KINDS: Final[frozenset[Kind]] = frozenset({"psycopg_async", "mysql_async", "sa_async", "mongo_async"})
MONGO_KINDS: Final[frozenset[Kind]] = frozenset({"mongo", "mongo_async"})

# MySQL drivers: (module, attribute path of its connection class, asynchronous?).
_MYSQL_CONNECTIONS = (
    ("pymysql", "connections.Connection", False),
    ("MySQLdb", "connections.Connection", False),
    ("aiomysql", "Connection", True),
    ("asyncmy", "connection.Connection", True),
)
MYSQL_DRIVER_MODULES: Final = frozenset(module for module, _, _ in _MYSQL_CONNECTIONS)
"""The top-level modules of the MySQL drivers whose connections ``outbox.add`` accepts."""
_MYSQL_NO_SUCH_TABLE = 1146


def mysql_kind(target: object) -> Literal["sync", "async"] | None:
    """``"sync"`` for a PyMySQL or mysqlclient connection, ``"async"`` for aiomysql or asyncmy, else None."""
    for module, path, is_async in _MYSQL_CONNECTIONS:
        found: Any = sys.modules.get(module)
        for attribute in path.split(".") if found is not None else ():
            found = getattr(found, attribute, None)
        if isinstance(found, type) and isinstance(target, found):
            return "async" if is_async else "sync"
    return None


def classify(target: object) -> Kind | None:
    """The kind of database handle ``target`` is, or None."""
    if isinstance(target, sqlite3.Connection):
        return "sqlite"
    if sys.modules.get("psycopg") is not None:
        import psycopg

        if isinstance(target, psycopg.AsyncConnection):
            return "psycopg_async"
        if isinstance(target, psycopg.Connection):
            return "psycopg"
    mysql = mysql_kind(target)
    if mysql is not None:
        return "mysql_async" if mysql == "async" else "mysql"
    if sys.modules.get("sqlalchemy") is not None:
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session

        if isinstance(target, Session | SAConnection):
            return "sa"
        if "sqlalchemy.ext.asyncio" in sys.modules:
            from sqlalchemy.ext.asyncio import AsyncConnection as SAAsyncConnection
            from sqlalchemy.ext.asyncio import AsyncSession

            if isinstance(target, AsyncSession | SAAsyncConnection):
                return "sa_async"
    if sys.modules.get("pymongo") is not None:
        from pymongo.asynchronous.database import AsyncDatabase
        from pymongo.database import Database

        if isinstance(target, AsyncDatabase):
            return "mongo_async"
        if isinstance(target, Database):
            return "mongo"
    return None


def check_kind(
    target: object,
    session: object,
    *,
    is_async: bool,
    accepted: Collection[Kind],
    role: str,
    call: str,
    supported: str,
    error: Callable[[str], Exception],
) -> Kind:
    """The kind of ``target`` when it is one of ``accepted`` and suits the call, else ``error`` saying why:
    an unsupported handle (``supported`` lists the right ones), an asynchronous handle given to ``call``,
    a synchronous one given to ``call_async`` (a ``sqlite3.Connection`` suits both), or ``session=`` with
    anything but pymongo. ``role`` (``"outbox"``, ``"inbox"``) starts the messages."""
    kind = classify(target)
    name = type(target).__qualname__
    if kind is None or kind not in accepted:
        raise error(f"{role} target {name} is not supported; pass a {supported}")
    if not is_async and kind in ASYNC_KINDS:
        raise error(f"{role} target {name} is asynchronous: use `await {call}_async(...)`")
    if is_async and kind not in ASYNC_KINDS and kind != "sqlite":
        raise error(f"{role} target {name} is synchronous: use {call}(...)")
    if session is not None and kind not in MONGO_KINDS:
        raise error("session= is only for pymongo targets (the ClientSession of the transaction)")
    return kind


def sa_dialect(
    target: Any, *, supported: tuple[str, ...], role: str, error: Callable[[str], Exception]
) -> str:
    """The dialect of an SQLAlchemy session or connection (``mariadb`` counts as ``mysql``), or ``error``
    naming it when it is not one of ``supported``."""
    bind = target.get_bind() if hasattr(target, "get_bind") else target
    name = str(bind.dialect.name)
    dialect = "mysql" if name == "mariadb" else name  # SQLAlchemy's name for MySQL talking to MariaDB
    if dialect not in supported:
        raise error(f"SQLAlchemy dialect {name!r} is not supported by the {role} ({', '.join(supported)})")
    return dialect


def is_mysql_missing_table(exc: object) -> bool:
    """Whether a driver error is MySQL's ``ER_NO_SUCH_TABLE`` (every driver puts the code in ``args[0]``)."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return bool(args) and args[0] == _MYSQL_NO_SUCH_TABLE


def is_missing_table(exc: object) -> bool:
    """Whether a driver error (SQLite, psycopg or a MySQL driver) says the table does not exist."""
    psycopg = sys.modules.get("psycopg")  # a psycopg error implies psycopg is imported
    return (
        (psycopg is not None and isinstance(exc, psycopg.errors.UndefinedTable))
        or (isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc))
        or (type(exc).__module__.partition(".")[0] in MYSQL_DRIVER_MODULES and is_mysql_missing_table(exc))
    )
