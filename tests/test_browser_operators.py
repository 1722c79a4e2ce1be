"""The dashboard's operator views in headless Chromium (Debian ``chromium`` via Playwright): charts and
sparklines, dead letters (redrive), group reset and closing a connection — each click is checked through
the hub itself. Screenshots go to ``test-artifacts/operators-*.png``. Skipped without Chromium, except under
``CI=true`` (the ``browser`` fixture of test_browser_dashboard.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from outboxhub.app import Hub
from outboxhub.model import NewEvent, StartPosition
from test_browser_dashboard import ARTIFACTS, _page, _sign_in, browser

__all__ = ["browser"]  # the fixture, imported so pytest finds it here

pytestmark = pytest.mark.browser

WRITE = ["ops:read", "ops:write", "subscribe:**", "publish:**"]


async def _dead_letters(hub: Hub, topic: str, group: str, n: int) -> list[str]:
    await hub.bus.publish_batch([NewEvent(topic=topic, payload={"order": i}) for i in range(n)])
    await hub.store.ensure_group(topic, group, StartPosition(kind="earliest"))
    for d in await hub.store.claim(topic, group, "m", limit=n, ack_timeout_ms=60_000, max_deliver=1):
        await hub.store.nack(topic, group, d.event.id, max_deliver=1, reason="card declined")
    return [e.id for e in await hub.store.scan(f"dlq.{group}.{topic}")]


async def _connections(hub: Hub, jwt: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(hub.ops_url + "connections", headers={"Authorization": f"Bearer {jwt}"}) as r,
    ):
        rows: list[dict[str, Any]] = (await r.json())["connections"]
        return rows


async def test_redrive_reset_and_close_from_the_dashboard(
    browser: Any, hub: Hub, token: Any, ws_connect: Any
) -> None:
    from playwright.async_api import expect

    letters = await _dead_letters(hub, "orders.paid", "billing", 2)
    await hub.bus.publish_batch([NewEvent(topic="jobs.run", payload=i) for i in range(4)])
    await hub.store.ensure_group("jobs.*", "workers", StartPosition(kind="latest"))
    erin = await ws_connect(hub.ws_url, token=token(sub="erin", scopes=["subscribe:**"]))
    await erin.request("SUBSCRIBE", topic="jobs.*")
    jwt = token(sub="operator", scopes=WRITE)

    errors: list[str] = []
    page = await _page(browser, errors)
    dialogs: list[str] = []
    answering: set[asyncio.Future[None]] = set()

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        answer = dialog.accept("earliest") if dialog.type == "prompt" else dialog.accept()
        task = asyncio.ensure_future(answer)
        answering.add(task)
        task.add_done_callback(answering.discard)

    page.on("dialog", on_dialog)
    await _sign_in(page, hub, jwt)
    await expect(page.locator("#app")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)

    # charts: the two uPlot charts and a sparkline per topic and per group (after the second sample)
    await expect(page.locator("#chart-rates canvas")).to_have_count(1)
    await expect(page.locator("#chart-lag canvas")).to_have_count(1)
    await expect(page.locator('#spark-groups [data-group="jobs.* workers"] canvas')).to_have_count(1)
    await expect(page.locator('#spark-topics [data-topic="orders.paid"] canvas')).to_have_count(1)
    await page.screenshot(path=str(ARTIFACTS / "operators-charts.png"), full_page=True)

    # dead letters: list them, redrive one (confirmed), and it is back on its topic, once
    await page.fill("#dlq-group", "billing")
    await page.click("#dlq-show")
    rows = page.locator("#dlq-table tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.first.locator("td.err")).to_have_text("card declined")
    await page.locator(f'#dlq-table button.redrive[data-id="{letters[0]}"]').click()
    await expect(page.locator(f'#dlq-table tr[data-id="{letters[0]}"] td.redriven')).to_have_text("yes")
    assert await hub.store.count("orders.paid") == 3
    redriven = (await hub.store.scan("orders.paid"))[-1]
    assert redriven.headers == {"x-redriven-from": letters[0]}
    await page.screenshot(path=str(ARTIFACTS / "operators-dead-letters.png"), full_page=True)

    # group reset: the prompt answers "earliest", the confirmation is accepted, the group re-reads all 4
    lag = await hub.store.lag("jobs.*", "workers")
    assert lag is not None and lag.lag_count == 0
    await page.locator('#groups-table tr[data-group="jobs.*::workers"] button.reset').click()
    await expect(page.locator("#ops-result")).to_contain_text("reset to earliest")
    lag = await hub.store.lag("jobs.*", "workers")
    assert lag is not None and lag.lag_count == 4

    # connections: erin's row, closed from the page (confirmed); the socket gets 1008 and the row goes
    row = page.locator('#connections-table tr[data-sub="erin"]')
    await expect(row).to_have_count(1)
    await expect(row.locator("td").nth(3)).to_have_text("jobs.*")
    await page.screenshot(path=str(ARTIFACTS / "operators-connections.png"), full_page=True)
    await row.locator("button.close-conn").click()
    assert await erin.wait_closed() == 1008
    await expect(row).to_have_count(0)
    assert all(c["sub"] != "erin" for c in await _connections(hub, jwt))
    assert any("Close the connection of erin" in d for d in dialogs)
    assert any("Redrive dead letter" in d for d in dialogs) and any("Reset workers" in d for d in dialogs)
    await page.screenshot(path=str(ARTIFACTS / "operators.png"), full_page=True)
    assert errors == []
