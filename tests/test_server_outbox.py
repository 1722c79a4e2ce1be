"""``outboxhub serve --outbox URL``: the hub drains application outboxes into its own log."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from outboxhub import outbox
from outboxhub.errors import OutboxhubError
from outboxhub.server import Hub


def _app_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    outbox.ensure_schema(conn)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, state TEXT)")
    return conn


async def _wait_for_count(hub: Hub, topic: str, count: int) -> int:
    seen = 0
    for _ in range(200):
        seen = await hub.store.count(topic)
        if seen >= count:
            break
        await asyncio.sleep(0.05)
    return seen


async def test_records_committed_by_the_application_reach_the_hub_log_once(
    hub_factory: Callable[..., Awaitable[Hub]], tmp_path: Path
) -> None:
    conn = _app_db(tmp_path / "app.db")
    hub = await hub_factory(outbox=[f"sqlite:///{tmp_path / 'app.db'}"])
    assert len(hub.drainers) == 1

    with conn:  # committed: its record is published
        conn.execute("INSERT INTO orders VALUES (1, 'paid')")
        kept = outbox.add(conn, "orders.paid", {"order": 1}, key="1")
    try:
        with conn:  # rolled back: its record never existed
            conn.execute("INSERT INTO orders VALUES (2, 'paid')")
            outbox.add(conn, "orders.paid", {"order": 2}, key="2")
            raise RuntimeError("business rule failed")
    except RuntimeError:
        pass

    assert await _wait_for_count(hub, "orders.paid", 1) == 1
    await asyncio.sleep(0.3)  # give a wrongly published second record the chance to show up
    events = await hub.store.scan("orders.paid")
    assert [(e.id, e.payload, e.key) for e in events] == [(kept, {"order": 1}, "1")]
    conn.close()


async def test_an_unusable_outbox_url_fails_the_start(
    hub_factory: Callable[..., Awaitable[Hub]], tmp_path: Path
) -> None:
    with pytest.raises(OutboxhubError, match="ftp"):
        await hub_factory(outbox=["ftp://example.invalid/outbox"])
    with pytest.raises(OutboxhubError, match="missing-dir"):
        await hub_factory(outbox=[f"sqlite:///{tmp_path / 'missing-dir' / 'app.db'}"])
