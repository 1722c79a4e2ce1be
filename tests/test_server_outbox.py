"""``outboxhub serve --outbox URL``: the hub drains application outboxes into its own log."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outboxhub import outbox
from outboxhub.app import Hub, _drainer_settings
from outboxhub.cli.app import app
from outboxhub.config import Settings
from outboxhub.errors import OutboxhubError


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


async def test_drainer_settings_apply_to_the_hubs_drainers(
    hub_factory: Callable[..., Awaitable[Hub]], tmp_path: Path
) -> None:
    conn = _app_db(tmp_path / "app.db")
    with conn:
        # Claimed once already by a drainer that crashed: with max_attempts=1 the next claim kills it.
        conn.execute("INSERT INTO outbox (topic, payload, attempts) VALUES ('orders.crashy', '1', 1)")
        # k1's first record is dead: with ordered_by_key, k1's later record must wait behind it.
        conn.execute(
            "INSERT INTO outbox (topic, payload, key, status) VALUES ('orders.k1', '1', 'k1', 'dead')"
        )
        blocked = outbox.add(conn, "orders.k1", 2, key="k1")
        free = outbox.add(conn, "orders.k2", 1, key="k2")
    hub = await hub_factory(
        outbox=[f"sqlite:///{tmp_path / 'app.db'}"],
        outbox_batch_size=7,
        outbox_max_attempts=1,
        outbox_ordered_by_key=True,
    )
    (drainer,) = hub.drainers
    assert (drainer.settings.batch_size, drainer.settings.max_attempts) == (7, 1)
    assert drainer.settings.ordered_by_key

    assert await _wait_for_count(hub, "orders.k2", 1) == 1  # claimed after `blocked`: that was skipped
    for _ in range(200):  # safety net only
        if drainer.dead:
            break
        await asyncio.sleep(0.05)
    rows = dict(
        conn.execute("SELECT id, status FROM outbox WHERE topic LIKE 'orders.k%' AND status != 'dead'")
    )
    assert rows == {blocked: "pending", free: "sent"}
    assert conn.execute("SELECT status FROM outbox WHERE topic = 'orders.crashy'").fetchone() == ("dead",)
    assert await hub.store.count("orders.crashy") == 0
    conn.close()


def test_serve_flags_set_the_drainer_settings_and_bad_values_are_one_line(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[Settings] = []
    monkeypatch.setattr("outboxhub.app.serve", lambda settings: captured.append(settings))
    runner = CliRunner()
    flags = ["--outbox-batch-size", "9", "--outbox-max-attempts", "2", "--outbox-ordered-by-key"]
    result = runner.invoke(app, ["serve", "--outbox", "sqlite:///app.db", *flags])
    assert result.exit_code == 0, result.output
    (settings,) = captured
    assert (settings.outbox_batch_size, settings.outbox_max_attempts, settings.outbox_ordered_by_key) == (
        9,
        2,
        True,
    )
    drainer = _drainer_settings(settings)
    assert (drainer.batch_size, drainer.max_attempts, drainer.ordered_by_key) == (9, 2, True)

    result = runner.invoke(app, ["serve", "--outbox-batch-size", "0"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "outbox_batch_size" in lines[0] and "--outbox-batch-size 0" in lines[0]
