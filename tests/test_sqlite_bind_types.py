"""The SQLite writer binds an event's columns without sqlite3's adapter lookup (``None`` and ``bytes`` go
through it, and it fails by raising and formatting an AttributeError per value), and stores the same
values as before: NULL for an absent key or meta, the key's text as given, the payload and meta as BLOBs."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from outboxhub.model import NewEvent
from outboxhub.store.sqlite.store import SQLiteStore


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'hub.db'}")
    yield store
    await store.close()


@pytest.fixture
def adapted() -> Iterator[list[type]]:
    """The types of the values sqlite3 passes through its adapter registry while the test runs (an adapter
    that returns the value as it is, registered for the types it would look up for an event's row)."""
    seen: list[type] = []
    keys = [(kind, sqlite3.PrepareProtocol) for kind in (type(None), bytes)]

    def identity(value: object) -> object:
        seen.append(type(value))
        return value

    for key in keys:
        assert key not in sqlite3.adapters
        sqlite3.adapters[key] = identity
    try:
        yield seen
    finally:
        for key in keys:
            sqlite3.adapters.pop(key, None)


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT key, typeof(key), payload, typeof(payload), meta, typeof(meta) FROM events ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


async def test_publishes_bind_no_value_that_sqlite3_adapts(
    sqlite_store: SQLiteStore, adapted: list[type], tmp_path: Path
) -> None:
    await sqlite_store.publish(NewEvent(topic="t.one", payload="x" * 98))  # inline, on the loop thread
    await sqlite_store.publish(NewEvent(topic="t.one", payload={"a": 1}, key="k", headers={"h": "v"}))
    batch = [NewEvent(topic="t.many", payload=i) for i in range(5)]
    batch[2] = NewEvent(topic="t.many", payload=[1, 2], key="0", tags=["x"])
    batch[3] = NewEvent(topic="t.many", payload=None, key="")
    await sqlite_store.publish_batch(batch)  # a run of several rows: the multi-row INSERT
    assert adapted == []

    rows = _rows(tmp_path / "hub.db")
    assert rows[0] == (None, "null", b'"' + b"x" * 98 + b'"', "blob", None, "null")
    assert rows[1][:4] == ("k", "text", b'{"a":1}', "blob")
    assert rows[1][5] == "blob"
    keys = [row[:2] for row in rows[2:]]
    assert keys == [(None, "null"), (None, "null"), ("0", "text"), ("", "text"), (None, "null")]
    assert [row[3] for row in rows] == ["blob"] * 7
    assert [row[5] for row in rows[2:]] == ["null", "null", "blob", "null", "null"]

    events = await sqlite_store.scan("t.*", limit=10)
    assert [(e.payload, e.key, e.headers, e.tags) for e in events] == [
        ("x" * 98, None, None, None),
        ({"a": 1}, "k", {"h": "v"}, None),
        (0, None, None, None),
        (1, None, None, None),
        ([1, 2], "0", None, ["x"]),
        (None, "", None, None),
        (4, None, None, None),
    ]
