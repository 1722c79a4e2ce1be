"""The dashboard in headless Chromium (Debian ``chromium``, driven by Playwright for Python).

Without Chromium the tests are skipped, except under ``CI=true``, where they fail naming what to run
(``scripts/ensure-browser.sh``). The screenshot goes to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from outboxhub import outbox
from outboxhub.app import Hub
from outboxhub.model import NewEvent, PublishResult, StartPosition

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("OUTBOXHUB_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        message = f"{CHROMIUM} is missing: run scripts/ensure-browser.sh (apt-get install chromium) as root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def _page(browser: Any, errors: list[str]) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    return page


async def _sign_in(page: Any, hub: Hub, jwt: str) -> None:
    await page.goto(hub.ops_url)
    await page.fill("#token", jwt)
    await page.click("#signin")


class GatedSink:
    """The drainer's way into the hub, refusing every record while ``refuse`` is set."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.refuse = True

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        if self.refuse:
            raise ValueError("downstream refused the record")
        return await self.hub.bus.publish_batch(events)


async def test_live_view_and_outbox_retry(browser: Any, hub_factory: Any, tmp_path: Path, token: Any) -> None:
    from playwright.async_api import expect

    app_db = tmp_path / "app.db"
    with sqlite3.connect(app_db) as conn:
        outbox.ensure_schema(conn)
        dead_id = outbox.add(conn, "process.state", {"host": "db-1", "state": "recovered"}, key="db-1")
    hub: Hub = await hub_factory(outbox=[f"sqlite:///{app_db}"], outbox_drain=False)
    sink = GatedSink(hub)
    store = await outbox.open_outbox(f"sqlite:///{app_db}")
    drainer = outbox.Drainer(
        store, sink, outbox.DrainerSettings(max_attempts=1, concurrency=1, idle_wait_ms=50)
    )
    await drainer.run_until_idle()
    assert drainer.dead == 1, "the record should be dead after one refused attempt"
    sink.refuse = False
    draining = asyncio.create_task(drainer.run())

    await hub.bus.publish(NewEvent(topic="process.state", key="host-0", payload={"state": "booting"}))
    await hub.store.ensure_group("process.*", "ops-team", StartPosition(kind="earliest"))
    errors: list[str] = []
    try:
        page = await _page(browser, errors)
        await _sign_in(page, hub, token(scopes=["ops:read", "ops:write", "subscribe:**"]))
        await expect(page.locator("#conn-state")).to_have_text("live")
        rows = page.locator("#live-table tbody tr")
        # history (published before the page loaded) comes from /replay
        await expect(page.locator('#live-table tr[data-key="host-0"] td.payload')).to_contain_text("booting")

        # live events published from Python appear, one row per key, the newest event winning
        await hub.bus.publish_batch(
            [
                NewEvent(topic="process.state", key=f"host-{i}", payload={"state": "running", "pid": i})
                for i in (1, 2)
            ]
        )
        await hub.bus.publish(
            NewEvent(topic="process.state", key="host-0", payload={"state": "running", "pid": 0})
        )
        await hub.bus.publish(NewEvent(topic="process.other", key="host-9", payload={"state": "elsewhere"}))
        for i in (0, 1, 2):
            await expect(page.locator(f'#live-table tr[data-key="host-{i}"] td.payload')).to_contain_text(
                '"pid":'
            )
        await expect(rows).to_have_count(3)
        await hub.bus.publish(NewEvent(topic="process.state", key="host-1", payload={"state": "stopped"}))
        await expect(page.locator('#live-table tr[data-key="host-1"] td.payload')).to_contain_text("stopped")
        await expect(rows).to_have_count(3)

        # topics and groups with lag
        await expect(page.locator('#topics-table tr[data-topic="process.state"] td').nth(1)).to_have_text("5")
        await expect(
            page.locator('#groups-table tr[data-group="process.*::ops-team"] td.lag-count')
        ).to_have_text("6")

        # the dead outbox record: retry it, and it is published (it shows up in the live view)
        outbox_box = page.locator("div.outbox")
        await expect(outbox_box.locator("b.dead")).to_have_text("1")
        await expect(outbox_box.locator(f'tr[data-id="{dead_id}"] td.err')).to_contain_text(
            "downstream refused"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-before-retry.png"), full_page=True)
        await outbox_box.locator(f'button.retry[data-id="{dead_id}"]').click()
        await expect(page.locator('#live-table tr[data-key="db-1"] td.payload')).to_contain_text("recovered")
        await expect(outbox_box.locator("b.dead")).to_have_text("0")
        await expect(outbox_box.locator("b.pending")).to_have_text("0")  # drained (next refresh)
        assert (await hub.store.get_event(dead_id)) is not None, "the retried record was published"

        # the token lives in sessionStorage only
        stored = await page.evaluate("[sessionStorage.getItem('outboxhub.token'), localStorage.length]")
        assert stored[0] and stored[1] == 0
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    finally:
        drainer.stop()
        await draining
        await store.close()
    assert errors == []


async def test_sign_in_refusals_and_session_persistence(browser: Any, hub: Hub, token: Any) -> None:
    from playwright.async_api import expect

    errors: list[str] = []
    page = await _page(browser, errors)
    await _sign_in(page, hub, "not-a-token")
    await expect(page.locator("#login-error")).to_contain_text("Token refused: jwt_invalid")
    await _sign_in(page, hub, token(scopes=["subscribe:**"]))
    await expect(page.locator("#login-error")).to_contain_text("ops:read")
    assert await page.locator("#app").is_hidden()

    await _sign_in(page, hub, token(scopes=["ops:read", "subscribe:**"]))
    await expect(page.locator("#app")).to_be_visible()
    await page.reload()  # same tab: the session keeps the token
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#conn-state")).to_have_text("live")
    await page.click("#signout")
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('outboxhub.token')") is None
    # failed fetches of the refused sign-ins are logged by the browser as console errors; nothing else
    assert [e for e in errors if "401" not in e and "403" not in e] == []
