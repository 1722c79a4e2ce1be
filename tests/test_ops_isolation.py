"""Issue #14 on the ops API of a real hub: /outbox redacts dead records the token may not subscribe to,
and no credential of an outbox URL shows on /outbox, /metrics or in logs."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from outboxhub import outbox


async def _make_dead(path: Path, topics: list[str]) -> None:
    class Refusing:
        async def publish_batch(self, events: Any) -> Any:
            raise ValueError("the sink refuses this record")

    with sqlite3.connect(path) as conn:
        for topic in topics:
            outbox.add(conn, topic, {"secret": topic}, headers={"h": "v"})
    store = await outbox.open_outbox(f"sqlite:///{path}")
    try:
        drainer = outbox.Drainer(store, Refusing(), outbox.DrainerSettings(max_attempts=1, concurrency=1))
        await drainer.run_until_idle()
    finally:
        await store.close()


async def test_outbox_redacts_and_urls_are_masked(
    hub_factory: Any, token: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.ensure_schema(conn)
    await _make_dead(path, ["payroll.salaries", "orders.paid"])
    urls = [
        f"sqlite:///{path}",
        f"sqlite:///{tmp_path / 'other.db'}?token=hunter2&secret=s3cret",  # refused: its error quotes the URL
        "postgresql://app:s3cret@127.0.0.1:1/app?sslpassword=hunter2",  # down: its error too
    ]
    caplog.set_level(logging.DEBUG)
    hub = await hub_factory(outbox=urls, outbox_drain=False)
    reader = token(sub="r", scopes=["ops:read", "subscribe:orders.**"])
    async with aiohttp.ClientSession() as session:
        base = hub.ops_url.rstrip("/")
        async with session.get(base + "/outbox", headers={"Authorization": f"Bearer {reader}"}) as resp:
            assert resp.status == 200
            text = await resp.text()
            body = await resp.json()
        async with session.get(base + "/metrics") as resp:
            metrics = await resp.text()
    state, refused, down = body["outboxes"]
    assert state["up"], state
    assert not refused["up"] and not down["up"]
    assert "token=***" in refused["name"] and "app:***@" in down["name"]
    records = {r["topic"]: r for r in state["deadRecords"]}
    assert records["orders.paid"]["payload"] == {"secret": "orders.paid"}
    assert records["orders.paid"]["redacted"] is False
    assert records["payroll.salaries"]["payload"] is None and records["payroll.salaries"]["headers"] is None
    assert records["payroll.salaries"]["redacted"] is True
    assert 'payroll.salaries"}' not in text and '"secret":"payroll' not in text
    for shown in (text, metrics, caplog.text):
        assert "hunter2" not in shown and "s3cret" not in shown
    assert "outboxhub_outbox" in metrics and "sslpassword=***" in metrics


async def test_a_deeply_nested_ops_body_is_a_400(hub_factory: Any, token: Any) -> None:
    hub = await hub_factory()
    writer = token(sub="w", scopes=["ops:read", "ops:write"])
    async with aiohttp.ClientSession() as session:
        for path in ("/outbox/retry", "/outbox/purge"):
            async with session.post(
                hub.ops_url.rstrip("/") + path,
                data=b'{"ids": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                headers={"Authorization": f"Bearer {writer}", "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 400, await resp.text()
                assert "nested too deeply" in (await resp.json())["error"]
