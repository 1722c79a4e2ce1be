"""Translation of sqlite3 exceptions into the outboxhub exception tree, and the rollback after one."""

from __future__ import annotations

import logging
import sqlite3

from outboxhub.errors import StoreError, StoreUnavailable

__all__ = ["cannot_open", "rollback", "translate", "undo"]

_log = logging.getLogger("outboxhub.store.sqlite.store")

_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_PROTOCOL",
    "SQLITE_NOLFS",
)


def translate(exc: BaseException, url: str) -> BaseException:
    """``StoreUnavailable`` for a database that cannot be reached or written right now (locked, I/O error,
    disk full, cannot open), ``StoreError`` for other sqlite3 errors, anything else unchanged."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    name = getattr(exc, "sqlite_errorname", None) or ""
    message = f"sqlite store {url}: {exc}"
    if name.startswith(_UNAVAILABLE):
        error: StoreError = StoreUnavailable(message)
    else:
        error = StoreError(message)
    error.__cause__ = exc
    return error


def rollback(conn: sqlite3.Connection) -> None:
    """End the transaction ``conn`` has open, if any, after a failure (a failed ROLLBACK is logged)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            _log.exception("sqlite writer: ROLLBACK failed")


def undo(conn: sqlite3.Connection, savepoint: str) -> BaseException | None:
    """Roll back to ``savepoint`` and release it; the error when that fails (the batch is then broken)."""
    try:
        conn.execute(f"ROLLBACK TO {savepoint}")
        conn.execute(f"RELEASE {savepoint}")
    except Exception as exc:
        return exc
    return None


def cannot_open(exc: BaseException, url: str) -> BaseException:
    """The error of a store whose file cannot be opened (``StoreUnavailable`` for a sqlite3 error)."""
    if isinstance(exc, sqlite3.Error):
        error = StoreUnavailable(f"cannot open sqlite store {url}: {exc}")
        error.__cause__ = exc
        return error
    return exc
